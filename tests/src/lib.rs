//! Support for the end-to-end suite: find the `drainguard` binary, run it
//! as a user would, follow its log, talk to its HTTP API, stop it with a
//! signal.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test support reports progress"
)]

pub mod anvil;
pub mod prometheus;
pub mod proxy;
pub mod receivers;
pub mod tansu;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `drainguard` binary of the profile these tests were built with.
/// `cargo test --workspace` builds it (the daemon package has integration
/// tests of its own); run alone, this suite builds it under a lock.
pub fn drainguard_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/<test> -> target/<profile>/drainguard
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected test binary location")?;
    let bin = profile_dir.join("drainguard");
    if bin.exists() {
        return Ok(bin);
    }
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let lock_path = profile_dir.join(".drainguard-e2e-build.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().context("locking the build")?;
    if !bin.exists() {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "drainguard-daemon", "--bin", "drainguard"])
            .current_dir(repo_root());
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of drainguard failed: {status}");
        }
    }
    Ok(bin)
}

/// Environment variable naming the folder the suite installs its
/// components into (one sub-folder each).
pub const TOOLS_DIR_ENV: &str = "DRAINGUARD_TOOLS_DIR";

/// The folder components are installed into: `$DRAINGUARD_TOOLS_DIR`, else
/// `$XDG_CACHE_HOME/drainguard/tools`, else `~/.cache/drainguard/tools`.
/// It is outside the repository so that every clone on a machine (CI runs
/// in a fresh one each time) reuses one install: tansu is a 20-minute build.
pub fn tools_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(TOOLS_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .map(|home| Path::new(&home).join(".cache"))
            .with_context(|| format!("neither {TOOLS_DIR_ENV}, XDG_CACHE_HOME nor HOME is set"))?,
    };
    Ok(cache.join("drainguard").join("tools"))
}

/// `<tools_dir>/<name>/`, created, with its install lock held until the
/// returned file is dropped: test processes running at once (and clones
/// tested at once) share one install of a component instead of racing on
/// one folder.
pub fn locked_tool_dir(name: &str) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let dir = tools_dir()?.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock_path = dir.join(".install.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking the {name} install"))?;
    Ok((dir, lock))
}

/// Writes `dir/drainguard.toml` for a test: the API on a free loopback
/// port and the store inside `dir`, then `body` (sources, responders).
pub fn write_config(dir: &Path, body: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("drainguard.toml");
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"state/drainguard.sqlite\"\n{body}"
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs `drainguard` with arguments to completion.
pub fn drainguard(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new(drainguard_bin()?)
        .args(args)
        .current_dir(repo_root())
        .output()
        .context("running drainguard")
}

/// A running `drainguard run`, its log collected as it comes.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The HTTP API's base URL, from the daemon's own log line.
    pub base_url: String,
}

impl Daemon {
    /// Starts `drainguard run --config <config>` and waits until its API
    /// listens.
    pub fn start(config: &Path) -> anyhow::Result<Daemon> {
        Daemon::start_with_env(config, &[])
    }

    /// Like [`Daemon::start`], with these environment variables set. The
    /// daemon never inherits the suite's `DRAINGUARD_ADMIN_TOKEN`: it has
    /// one only when a test passes it here.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> anyhow::Result<Daemon> {
        Daemon::start_as("run", config, env)
    }

    /// Starts `drainguard <command> --config <config>` (`run`, `watch` or
    /// `engine`) with these environment variables, and waits until its
    /// API listens.
    pub fn start_as(command: &str, config: &Path, env: &[(&str, &str)]) -> anyhow::Result<Daemon> {
        let mut cmd = Command::new(drainguard_bin()?);
        cmd.args([command, "--config"])
            .arg(config)
            .env("DRAINGUARD_LOG", "info")
            .env_remove("DRAINGUARD_ADMIN_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting drainguard {command}"))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[drainguard] {line}");
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let mut d = Daemon {
            child,
            log,
            base_url: String::new(),
        };
        let line = d.wait_for_log("HTTP API listening", Duration::from_secs(60))?;
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .context("no addr in the listening line")?;
        d.base_url = format!("http://{addr}");
        Ok(d)
    }

    /// Where its HTTP API listens (`127.0.0.1:PORT`).
    pub fn api_addr(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_log_since(0, needle, timeout)
    }

    /// Waits for a log line containing `needle` among the lines from
    /// number `from` on (`log().len()` before an action: a line it caused).
    pub fn wait_for_log_since(
        &mut self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .log
                .lock()
                .ok()
                .and_then(|l| l.iter().skip(from).find(|l| l.contains(needle)).cloned())
            {
                return Ok(l);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("drainguard exited ({status}) before logging {needle:?}");
            }
            if Instant::now() > deadline {
                bail!("no log line containing {needle:?} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// GETs a path of the API: status and body.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .get(&format!("{}{path}", self.base_url))
            .call()
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .context("reading the body")?;
        Ok((status, body))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (`HUP`, ...) without waiting for anything.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} failed");
        }
        Ok(())
    }

    /// POSTs to a path of the API with no body and these headers: status
    /// and body.
    pub fn post(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
        self.post_body(path, headers, b"")
    }

    /// Sends the withdrawal system's intents (a JSON body) with its bearer
    /// token to `POST /v1/intents`.
    pub fn post_intents(&self, token: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let auth = format!("Bearer {token}");
        self.post_body("/v1/intents", &[("authorization", &auth)], body.as_bytes())
    }

    /// POSTs a body to a path of the API with these headers: status and
    /// body.
    pub fn post_body(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .post(&format!("{}{path}", self.base_url))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body).with_context(|| format!("POST {path}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .context("reading the body")?;
        Ok((status, text))
    }

    /// POSTs a body one byte over `limit` (announcing twice the limit) and
    /// reads the answer's status. The daemon answers 413 once it has read
    /// past its limit and then closes the connection: a client still
    /// writing at that moment would get a broken pipe, or a reset that
    /// discards the answer, so this one writes only what the daemon reads.
    pub fn post_over_limit(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        limit: usize,
    ) -> anyhow::Result<u16> {
        use std::io::{Read, Write};
        let addr = self.api_addr();
        let mut conn =
            std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            limit * 2
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        conn.write_all(head.as_bytes())
            .and_then(|()| conn.write_all(&vec![b' '; limit + 1]))
            .with_context(|| format!("POST {path}"))?;
        let mut answer = [0u8; 64];
        let n = conn.read(&mut answer).context("reading the answer")?;
        let line = String::from_utf8_lossy(&answer[..n]);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("no status in {line:?}"))
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) and waits for the exit.
    pub fn signal_and_wait(
        mut self,
        signal: &str,
        timeout: Duration,
    ) -> anyhow::Result<ExitStatus> {
        self.signal(signal)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("drainguard did not exit within {timeout:?} of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of a metric series in Prometheus text, summed over the lines
/// whose name and labels start with `prefix`.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every `drainguard_*` metric a dashboard in `dashboards/` queries, with
/// histogram suffixes (`_bucket`, `_sum`, `_count`) taken off.
pub fn dashboard_metric_names() -> anyhow::Result<Vec<String>> {
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(repo_root().join("dashboards"))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let mut exprs = Vec::new();
        collect_exprs(&json, &mut exprs);
        for e in exprs {
            let mut rest = e.as_str();
            while let Some(i) = rest.find("drainguard_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let name = &tail[..end];
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                names.insert(base.to_string());
                rest = &tail[end..];
            }
        }
    }
    Ok(names.into_iter().collect())
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
