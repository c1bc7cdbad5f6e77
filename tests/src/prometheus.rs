//! A real Prometheus for end-to-end tests of the metrics, the dashboards
//! and the alert rules: Debian's `prometheus` package, unpacked (not
//! installed: nothing is started as a service, no system folder changes)
//! into `<tools_dir>/prometheus/` (see [`crate::tools_dir`]) under a file lock
//! shared by every test, run on a free loopback port with its own scrape
//! configuration, and asked through its HTTP API.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

/// Environment variable naming a directory holding `prometheus` and
/// `promtool` to use instead of the unpacked package.
pub const PROMETHEUS_ENV: &str = "DRAINGUARD_PROMETHEUS_DIR";

/// The `prometheus` and `promtool` binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The server.
    pub prometheus: PathBuf,
    /// Its checker.
    pub promtool: PathBuf,
}

/// The binaries: `$DRAINGUARD_PROMETHEUS_DIR` if set, else Debian's package
/// unpacked under `<tools_dir>/prometheus/` on first use. Fails —
/// never skips — when it cannot be had.
pub fn binaries() -> anyhow::Result<Binaries> {
    static RESOLVED: Mutex<Option<Binaries>> = Mutex::new(None);
    let mut resolved = RESOLVED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(b) = resolved.as_ref() {
        return Ok(b.clone());
    }
    let dir = match std::env::var_os(PROMETHEUS_ENV) {
        Some(d) => PathBuf::from(d),
        None => unpack()?,
    };
    let b = Binaries {
        prometheus: dir.join("prometheus"),
        promtool: dir.join("promtool"),
    };
    let version = run_ok(&b.prometheus, &["--version"])?;
    eprintln!(
        "prometheus: {} ({})",
        b.prometheus.display(),
        version.lines().next().unwrap_or_default()
    );
    *resolved = Some(b.clone());
    Ok(b)
}

fn run_ok(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            bin.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // prometheus prints its version on stdout, promtool's checks on both.
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `promtool` with arguments: its output, or an error with it.
pub fn promtool(args: &[&str]) -> anyhow::Result<String> {
    run_ok(&binaries()?.promtool, args)
}

/// Downloads Debian's package with apt (refreshing the package lists once
/// if the first try fails) and unpacks it with `dpkg -x`, under a lock.
fn unpack() -> anyhow::Result<PathBuf> {
    let (root, lock) = crate::locked_tool_dir("prometheus")?;
    let bin_dir = root.join("usr").join("bin");
    if !bin_dir.join("prometheus").is_file() || !bin_dir.join("promtool").is_file() {
        let debs = root.join("deb");
        std::fs::create_dir_all(&debs)?;
        eprintln!(
            "prometheus: downloading Debian's package into {}",
            debs.display()
        );
        let download = || {
            Command::new("apt-get")
                .args(["download", "prometheus"])
                .current_dir(&debs)
                .stdin(Stdio::null())
                .output()
        };
        let mut out = download().context("running apt-get (Debian's apt is needed)")?;
        if !out.status.success() {
            let update = Command::new("apt-get")
                .args(["update", "-q"])
                .stdin(Stdio::null())
                .output()
                .context("running apt-get update")?;
            if !update.status.success() {
                bail!(
                    "apt-get update failed: {}",
                    String::from_utf8_lossy(&update.stderr)
                );
            }
            out = download().context("running apt-get")?;
        }
        if !out.status.success() {
            bail!(
                "apt-get download prometheus failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deb = std::fs::read_dir(&debs)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("prometheus_") && n.ends_with(".deb"))
            })
            .context("apt-get download left no prometheus_*.deb")?;
        let out = Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .output()
            .context("running dpkg -x")?;
        if !out.status.success() {
            bail!(
                "dpkg -x {} failed: {}",
                deb.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    drop(lock);
    Ok(bin_dir)
}

/// A running Prometheus, killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    port: u16,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`) every `interval`
    /// as job `drainguard`, with the alert rules files given (evaluated at
    /// the same interval).
    pub fn start(target: &str, interval: &str, rule_files: &[PathBuf]) -> anyhow::Result<Self> {
        Prometheus::start_many(&[target], interval, rule_files)
    }

    /// Like [`Prometheus::start`], scraping several processes in one job
    /// (a `watch` and an `engine`).
    pub fn start_many(
        targets: &[&str],
        interval: &str,
        rule_files: &[PathBuf],
    ) -> anyhow::Result<Self> {
        let targets = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let bins = binaries()?;
        let dir = tempfile::tempdir()?;
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {}", p.display()))
            .collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
                 rule_files:\n{}\nscrape_configs:\n  - job_name: drainguard\n    \
                 static_configs:\n      - targets: [{targets}]\n",
                rules.join("\n")
            ),
        )?;
        run_ok(
            &bins.promtool,
            &["check", "config", &config.to_string_lossy()],
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(&bins.prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let mut p = Prometheus {
            child,
            port,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = p.get("/-/ready") {
                return Ok(p);
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("prometheus exited at start ({status})");
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get(&self, path_and_query: &str) -> anyhow::Result<(u16, String)> {
        let mut resp = self
            .agent
            .get(&format!("http://127.0.0.1:{}{path_and_query}", self.port))
            .call()?;
        let status = resp.status().as_u16();
        Ok((status, resp.body_mut().read_to_string()?))
    }

    /// An instant query: the series of its result (an error for a query
    /// Prometheus refuses, naming the query and Prometheus's reason).
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let mut resp = self
            .agent
            .get(&format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query("query", expr)
            .call()?;
        let text = resp.body_mut().read_to_string()?;
        let json: Value =
            serde_json::from_str(&text).with_context(|| format!("{expr}: not JSON: {text}"))?;
        if json["status"] != "success" {
            bail!("{expr}: {}", json["error"]);
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The alerts Prometheus evaluates now (`/api/v1/alerts`).
    pub fn alerts(&self) -> anyhow::Result<Vec<Value>> {
        let (_, text) = self.get("/api/v1/alerts")?;
        let json: Value = serde_json::from_str(&text)?;
        Ok(json["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Whether every target is up, and the targets as Prometheus tells.
    fn targets(&self) -> anyhow::Result<(bool, Value)> {
        let (_, text) = self.get("/api/v1/targets")?;
        let json: Value = serde_json::from_str(&text)?;
        let up = json["data"]["activeTargets"]
            .as_array()
            .is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["health"] == "up"));
        Ok((up, json))
    }

    /// Waits up to `timeout` for every target to be up: on a loaded
    /// machine one scrape can miss its 1 s timeout, and the next decides.
    /// Fails with the targets as Prometheus last told them.
    pub fn wait_for_targets_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let (up, json) = self.targets()?;
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!("not every target is up after {timeout:?}: {json}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
