//! A real Kafka-protocol broker for end-to-end tests of the Kafka bus:
//! tansu (<https://github.com/tansu-io/tansu>), built with its in-memory
//! storage engine (`--features dynostore`; tansu's default build has no
//! storage engine a broker can run on), run on a free loopback port with
//! its own scratch folder, and administered with tansu's own CLI.
//!
//! Behaviour of tansu 0.6.0 that this module relies on, found by reading
//! its source and running it:
//! - `tansu broker` takes `--listener-url`, `--advertised-listener-url`,
//!   `--storage-engine` and `--cluster-id` (each also read from an
//!   environment variable — `LISTENER_URL`, ... — and from a `.env` file in
//!   the working directory, so the broker runs in its scratch folder and
//!   gets every one of them as a flag). `memory://tansu/` keeps everything
//!   in the process: a new broker starts empty;
//! - the broker prints `listening on: ...` *before* it binds and
//!   `ready in Nms` after, so readiness here is a real Kafka `ApiVersions`
//!   round trip over TCP after the latter;
//! - `tansu topic create NAME --partitions N --broker tcp://HOST:PORT`
//!   sends a Kafka `CreateTopics` and exits non-zero with the Kafka
//!   error's message in its output when the broker refuses (`Topic with
//!   this name already exists.`), after about 20 s of retries when nothing
//!   listens;
//!   `tansu topic list --broker ...` prints the Kafka `Metadata` answer's
//!   topics as one JSON array;
//! - when its port is taken it logs `AddrInUse` (its listening task
//!   panics) and exits with status 0;
//! - its logs go to stdout through `tracing` (level from `RUST_LOG`, errors
//!   only when unset), in colour unless `NO_COLOR` is set.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

/// Environment variable naming a `tansu` binary to use.
pub const TANSU_ENV: &str = "DRAINGUARD_TANSU";

/// The tansu releases the suite installs when it finds no binary (a cargo
/// version requirement: the command line above is 0.6's).
pub const TANSU_VERSION_REQ: &str = "~0.6";

/// The storage engine every [`Broker`] runs on.
const STORAGE_ENGINE: &str = "memory://tansu/";

/// How long [`Broker::start`] waits for a broker to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The tansu binary: `$DRAINGUARD_TANSU` if set; else `tansu` found on
/// `PATH` or in `$CARGO_HOME/bin` (default `~/.cargo/bin`) if it was built
/// with the in-memory storage; else installed with `cargo install tansu
/// --locked --features dynostore` under `<tools_dir>/tansu/`, under
/// a file lock so that test processes running at once share one install
/// (a build from source: about 20 minutes on two cores). Fails — never
/// skips — when it cannot be had.
pub fn binary() -> anyhow::Result<PathBuf> {
    // Resolved once per process: tests run in parallel and each would
    // otherwise queue on the file lock and log the version again.
    static RESOLVED: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut resolved = RESOLVED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(bin) = resolved.as_ref() {
        return Ok(bin.clone());
    }
    let bin = match std::env::var_os(TANSU_ENV) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("{TANSU_ENV}={} is not a file", path.display());
            }
            if !has_memory_storage(&path)? {
                bail!(
                    "{TANSU_ENV}={} was built without the in-memory storage engine \
                     (build it with `--features dynostore`)",
                    path.display()
                );
            }
            path
        }
        None => match found_binary() {
            Some(path) => path,
            None => install()?,
        },
    };
    let version = run_ok(&bin, &["--version"], None)?;
    eprintln!(
        "tansu: {} ({})",
        bin.display(),
        version.lines().next().unwrap_or_default().trim()
    );
    *resolved = Some(bin.clone());
    Ok(bin)
}

/// `tansu` on `PATH`, else in `$CARGO_HOME/bin`, if it can run a broker on
/// the in-memory storage.
fn found_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(home) = cargo_home {
        dirs.push(home.join("bin"));
    }
    for dir in dirs {
        let bin = dir.join("tansu");
        if !bin.is_file() {
            continue;
        }
        match has_memory_storage(&bin) {
            Ok(true) => return Some(bin),
            Ok(false) => eprintln!(
                "tansu: {} has no in-memory storage (not built with --features dynostore); \
                 not using it",
                bin.display()
            ),
            Err(e) => eprintln!(
                "tansu: {} does not run ({e:#}); not using it",
                bin.display()
            ),
        }
    }
    None
}

/// Whether the binary was built with `dynostore`, the feature that brings
/// the `memory://` storage: its help lists the storage engines it has.
fn has_memory_storage(bin: &Path) -> anyhow::Result<bool> {
    let help = run_ok(bin, &["--help"], None)?;
    Ok(help
        .lines()
        .any(|l| l.starts_with("Storage engines:") && l.contains("dynostore")))
}

/// Runs the binary with arguments (in `dir` if given, so that tansu reads
/// no stray `.env`): its stdout and stderr, or an error with them.
fn run_ok(bin: &Path, args: &[&str], dir: Option<&Path>) -> anyhow::Result<String> {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("NO_COLOR", "1").stdin(Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {} {}", bin.display(), args.join(" ")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            bin.display(),
            args.join(" "),
            out.status,
            text.trim()
        );
    }
    Ok(text)
}

/// Installs tansu with cargo under `<tools_dir>/tansu/` unless a
/// usable binary is already there, under a lock.
fn install() -> anyhow::Result<PathBuf> {
    let (root, lock) = crate::locked_tool_dir("tansu")?;
    let bin = root.join("bin").join("tansu");
    // Checked only now, under the lock: another process may have been
    // halfway through an install when this one looked.
    if !bin.is_file() || !has_memory_storage(&bin).unwrap_or(false) {
        let log_path = root.join("install.log");
        eprintln!(
            "tansu: installing tansu {TANSU_VERSION_REQ} with cargo into {} \
             (a build from source, about 20 minutes; log: {})",
            root.display(),
            log_path.display()
        );
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["install", "tansu", "--version", TANSU_VERSION_REQ])
            .args(["--locked", "--features", "dynostore", "--root"])
            .arg(&root)
            // Its own build folder, kept: a second try after a failure
            // resumes instead of starting over.
            .arg("--target-dir")
            .arg(root.join("build"))
            .env_remove("CARGO_TARGET_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing the install log")?)
            .stderr(log)
            .status()
            .context("running cargo install (needed to build tansu)")?;
        if !status.success() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "cargo install tansu failed ({status}); set {TANSU_ENV} to a tansu binary \
                 built with --features dynostore instead. The end of {}:\n{}",
                log_path.display(),
                tail(&text, 30)
            );
        }
        if !has_memory_storage(&bin)? {
            bail!(
                "cargo installed {} but it has no in-memory storage engine",
                bin.display()
            );
        }
    }
    drop(lock);
    Ok(bin)
}

/// The last `n` lines of a text.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One Kafka API a broker serves, from its `ApiVersions` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    /// The API key (0 Produce, 1 Fetch, 2 ListOffsets, 3 Metadata, ...).
    pub key: i16,
    /// The oldest version served.
    pub min: i16,
    /// The newest version served.
    pub max: i16,
}

/// Sends a Kafka `ApiVersions` v0 request to `addr` and reads the answer:
/// the APIs the broker serves.
fn api_versions(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Vec<ApiVersion>> {
    const API_VERSIONS: i16 = 18;
    const CORRELATION_ID: i32 = 0x6472_6e67;
    const CLIENT_ID: &[u8] = b"drainguard-e2e";
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // Request header v1 (api key, version, correlation id, client id as
    // an int16-length string); the v0 body is empty.
    let mut request = Vec::new();
    request.extend_from_slice(&API_VERSIONS.to_be_bytes());
    request.extend_from_slice(&0_i16.to_be_bytes());
    request.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    request.extend_from_slice(&i16::try_from(CLIENT_ID.len())?.to_be_bytes());
    request.extend_from_slice(CLIENT_ID);
    let mut frame = u32::try_from(request.len())?.to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    stream.write_all(&frame).context("sending ApiVersions")?;
    let mut size = [0_u8; 4];
    stream
        .read_exact(&mut size)
        .context("reading the ApiVersions answer's size")?;
    let size = usize::try_from(u32::from_be_bytes(size))?;
    if size > 1 << 20 {
        bail!("an ApiVersions answer of {size} bytes: not a Kafka broker?");
    }
    let mut body = vec![0_u8; size];
    stream
        .read_exact(&mut body)
        .context("reading the ApiVersions answer")?;
    // Response header v0 (correlation id), then error code, then the
    // array (int32 count) of (api key, min version, max version).
    let mut r = Reader(&body);
    let correlation_id = r.i32()?;
    if correlation_id != CORRELATION_ID {
        bail!("ApiVersions answer for correlation id {correlation_id}, not {CORRELATION_ID}");
    }
    let error_code = r.i16()?;
    if error_code != 0 {
        bail!("ApiVersions answered with Kafka error code {error_code}");
    }
    let count = r.i32()?;
    (0..count)
        .map(|_| {
            Ok(ApiVersion {
                key: r.i16()?,
                min: r.i16()?,
                max: r.i16()?,
            })
        })
        .collect()
}

/// Big-endian integers off the front of a Kafka answer.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .context("the Kafka answer ends early")?;
        self.0 = rest;
        Ok(*head)
    }

    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.take()?))
    }
}

/// A running tansu broker on 127.0.0.1 with in-memory storage, killed on
/// drop (its topics and records go with it).
#[derive(Debug)]
pub struct Broker {
    bin: PathBuf,
    child: Child,
    port: u16,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts tansu on a free loopback port, advertised as that same
    /// `127.0.0.1:port`, and waits (up to 30 s) until it answers a Kafka
    /// `ApiVersions` request. A start that loses its port to another
    /// process is retried on a new one.
    pub fn start() -> anyhow::Result<Broker> {
        let bin = binary()?;
        let mut attempt = 1;
        loop {
            let mut broker = Broker::spawn(&bin)?;
            match broker.wait_ready() {
                Ok(()) => return Ok(broker),
                Err(e) if attempt < 3 && broker.lost_port() => {
                    eprintln!(
                        "tansu: port {} was taken before the broker bound it; retrying: {e:#}",
                        broker.port
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Launches the process, its output to a file in a new scratch folder.
    fn spawn(bin: &Path) -> anyhow::Result<Broker> {
        let dir = tempfile::tempdir().context("creating the broker's folder")?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log_path = dir.path().join("tansu.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(bin)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", STORAGE_ENGINE])
            .args(["--cluster-id", "drainguard-e2e"])
            // Its logs: warnings and errors, unless the suite asks for
            // more; no colour codes in the file.
            .env(
                "RUST_LOG",
                std::env::var("DRAINGUARD_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("NO_COLOR", "1")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing the broker's log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} broker", bin.display()))?;
        Ok(Broker {
            bin: bin.to_path_buf(),
            child,
            port,
            log_path,
            dir,
        })
    }

    /// Waits until this process has bound its port and answers
    /// `ApiVersions` on it, failing at once if it exits.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = None;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "tansu exited ({status}) before answering on port {}; its log:\n{}",
                    self.port,
                    tail(&self.log(), 30)
                );
            }
            // tansu 0.6 does not always exit when it cannot bind (the
            // listening task panics): its log says so.
            if self.lost_port() {
                bail!(
                    "tansu could not bind port {}; its log:\n{}",
                    self.port,
                    tail(&self.log(), 30)
                );
            }
            // An answer counts only once this process says it has bound
            // the port: if another process had taken it, that one would
            // answer.
            if self.log().contains("ready in") {
                match api_versions(addr, Duration::from_secs(2)) {
                    Ok(apis) if !apis.is_empty() => return Ok(()),
                    Ok(_) => last_error = Some("an empty ApiVersions answer".to_string()),
                    Err(e) => last_error = Some(format!("{e:#}")),
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "tansu did not answer ApiVersions on {addr} within {START_TIMEOUT:?} \
                     (last try: {}); its log:\n{}",
                    last_error
                        .as_deref()
                        .unwrap_or("it never said it was ready"),
                    tail(&self.log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the broker failed because its port was taken.
    fn lost_port(&self) -> bool {
        let log = self.log();
        log.contains("AddrInUse") || log.contains("Address already in use")
    }

    /// `"127.0.0.1:PORT"`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's URL as tansu's CLI takes it (`tcp://127.0.0.1:PORT`).
    fn url(&self) -> String {
        format!("tcp://{}", self.bootstrap())
    }

    /// Creates a topic with this many partitions (`tansu topic create`,
    /// a Kafka `CreateTopics`); errors name the topic and carry tansu's.
    pub fn create_topic(&self, name: &str, partitions: u32) -> anyhow::Result<()> {
        let url = self.url();
        let partitions = partitions.to_string();
        run_ok(
            &self.bin,
            &[
                "topic",
                "create",
                name,
                "--partitions",
                &partitions,
                "--broker",
                &url,
            ],
            Some(self.dir.path()),
        )
        .with_context(|| format!("creating topic {name:?} with {partitions} partitions"))?;
        Ok(())
    }

    /// The topics the broker has (`tansu topic list`, a Kafka `Metadata`):
    /// each topic as tansu prints it, a JSON object with `name` and
    /// `partitions` among others.
    pub fn topics(&self) -> anyhow::Result<Vec<Value>> {
        let url = self.url();
        let out = run_ok(
            &self.bin,
            &["topic", "list", "--broker", &url],
            Some(self.dir.path()),
        )
        .context("listing topics")?;
        // The JSON array is the one line that parses as one.
        out.lines()
            .find_map(|l| serde_json::from_str::<Vec<Value>>(l.trim()).ok())
            .with_context(|| format!("no JSON array of topics in tansu topic list's output: {out}"))
    }

    /// The number of partitions of a topic, or `None` if the broker does
    /// not have it.
    pub fn partitions(&self, topic: &str) -> anyhow::Result<Option<usize>> {
        Ok(self
            .topics()?
            .iter()
            .find(|t| t["name"] == topic)
            .map(|t| t["partitions"].as_array().map_or(0, Vec::len)))
    }

    /// The Kafka APIs the broker serves, from its `ApiVersions` answer.
    pub fn api_versions(&self) -> anyhow::Result<Vec<ApiVersion>> {
        api_versions(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(5),
        )
    }

    /// The broker's output so far (stdout and stderr), for error messages.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2e_tansu_broker_starts_and_creates_a_topic() {
        let broker = Broker::start().unwrap();
        let mut apis = broker.api_versions().unwrap();
        apis.sort_by_key(|a| a.key);
        let apis: Vec<String> = apis
            .iter()
            .map(|a| format!("{}:{}-{}", a.key, a.min, a.max))
            .collect();
        eprintln!(
            "tansu at {} serves the Kafka APIs (key:versions) {}",
            broker.bootstrap(),
            apis.join(" ")
        );
        assert_eq!(broker.partitions("probe").unwrap(), None);

        broker.create_topic("probe", 3).unwrap();

        assert_eq!(
            broker.partitions("probe").unwrap(),
            Some(3),
            "topics: {:?}\nlog:\n{}",
            broker.topics(),
            broker.log()
        );
        let again = broker.create_topic("probe", 3).unwrap_err();
        assert!(
            format!("{again:#}").contains("probe"),
            "the error names the topic: {again:#}"
        );
    }
}
