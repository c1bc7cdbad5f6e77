//! `drainguard run`, the embedded default: the simulator as chain source,
//! a drain caught and a freeze raised, metrics served, clean shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use std::time::Duration;

use drainguard_e2e::{Daemon, metric_sum};

use drainguard_store::{FreezeFilter, Store};

fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("drainguard.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[api]
listen = "127.0.0.1:0"
[store]
path = "state/drainguard.sqlite"
[bus]
capacity = 64
[source.sim]
preset = "coinex"
seed = 3
incident_at = "10m"
speed = 300.0
hours = 2.0
{extra}
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn e2e_daemon_sim_drain_freezes_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let mut d = Daemon::start(&cfg).unwrap();
    let (status, body) = d.get("/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    // The drain is 10 simulated minutes in: 2 s at 300x.
    let line = d
        .wait_for_log("FREEZE raised", Duration::from_secs(60))
        .unwrap();
    assert!(line.contains("scope=wallet:ethereum:"), "{line}");
    d.wait_for_log("scope=global", Duration::from_secs(60))
        .unwrap();
    let (status, metrics) = d.get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metric_sum(
            &metrics,
            "drainguard_findings_total{rule=\"unmatched-outflow\""
        ) >= 1.0,
        "{metrics}"
    );
    assert!(metric_sum(&metrics, "drainguard_freezes_total") >= 2.0);
    assert_eq!(
        metric_sum(&metrics, "drainguard_freezes_active{scope=\"global\"}"),
        1.0
    );
    assert!(metric_sum(&metrics, "drainguard_events_total") > 100.0);
    assert!(
        metric_sum(
            &metrics,
            "drainguard_chain_checkpoint_block{chain=\"ethereum\"}"
        ) > 0.0
    );
    assert_eq!(metric_sum(&metrics, "drainguard_build_info"), 1.0);
    // Every dashboard metric is checked with an EVM chain watched too, in
    // `tests/prometheus.rs`.
    let (status, ready) = d.get("/readyz").unwrap();
    assert_eq!(status, 200, "{ready}");
    let exit = d.signal_and_wait("TERM", Duration::from_secs(20)).unwrap();
    assert!(exit.success(), "SIGTERM is a clean stop: {exit}");
    // Durable: the freezes are in the store after the process is gone.
    let store = Store::open(&dir.path().join("state/drainguard.sqlite")).unwrap();
    let freezes = store.freezes(FreezeFilter::Active).unwrap();
    assert!(
        freezes
            .iter()
            .any(|f| f.freeze.scope.to_string() == "global")
    );
    assert!(
        store
            .audit(None)
            .unwrap()
            .iter()
            .any(|a| a.action == "freeze.raised")
    );
}

#[test]
fn e2e_daemon_restart_keeps_freezes_in_force_and_sigint_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let mut d = Daemon::start(&cfg).unwrap();
    d.wait_for_log("scope=global", Duration::from_secs(60))
        .unwrap();
    assert!(
        d.signal_and_wait("INT", Duration::from_secs(20))
            .unwrap()
            .success()
    );
    // What the baseline learned was saved at shutdown...
    {
        let store = Store::open(&dir.path().join("state/drainguard.sqlite")).unwrap();
        let learned = store
            .get_state("engine.learned")
            .unwrap()
            .expect("learned state saved");
        assert!(
            !learned["entries"].as_array().unwrap().is_empty(),
            "{learned}"
        );
    }
    // Same world again: the freezes are restored, not raised twice, and
    // the learned state is back.
    let mut d = Daemon::start(&cfg).unwrap();
    let restored = d
        .wait_for_log("learned state restored", Duration::from_secs(30))
        .unwrap();
    assert!(!restored.contains("entries=0"), "{restored}");
    d.wait_for_log(
        "freeze still in force from before the restart",
        Duration::from_secs(30),
    )
    .unwrap();
    let (_, metrics) = d.get("/metrics").unwrap();
    assert_eq!(
        metric_sum(&metrics, "drainguard_freezes_active{scope=\"global\"}"),
        1.0
    );
    std::thread::sleep(Duration::from_secs(4));
    let (_, metrics) = d.get("/metrics").unwrap();
    assert_eq!(
        metric_sum(&metrics, "drainguard_freezes_total"),
        0.0,
        "no new freeze: everything is already covered"
    );
    assert!(
        d.signal_and_wait("TERM", Duration::from_secs(20))
            .unwrap()
            .success()
    );
    let store = Store::open(&dir.path().join("state/drainguard.sqlite")).unwrap();
    let n = store.freezes(FreezeFilter::All).unwrap().len();
    assert!((2..=4).contains(&n), "{n} freezes");
}

/// Writes `text` to `path` and runs check-config on it: its exit code
/// and standard error.
fn check_config(path: &std::path::Path, text: &str) -> (Option<i32>, String) {
    std::fs::write(path, text).unwrap();
    let out =
        drainguard_e2e::drainguard(&["check-config", "--config", path.to_str().unwrap()]).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn e2e_daemon_config_errors_never_panic_or_quote_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    // TOML allows nan: named as the field's error, not a panic.
    let (code, err) = check_config(
        &path,
        "[api]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"x\"\n[source.sim]\nhours = nan\n",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("field `source.sim.hours`: NaN"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A syntax error on an endpoint's line: named by line and column,
    // without the line itself (its URL holds the API key).
    let (code, err) = check_config(
        &path,
        "[api]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"x\"\n[[source.evm]]\nchain = \"ethereum\"\nendpoints = [{ name = \"p\", url = \"https://eth.example/v2/SECRET-KEY\" ]\n",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("bad.toml: line 7, column"), "{err}");
    assert!(!err.contains("SECRET-KEY"), "{err}");

    // Numbers past any real chain or asset: each named by its field.
    let (code, err) = check_config(
        &path,
        "[api]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"x\"\n[source.sim]\nenabled = false\n[[source.evm]]\nchain = \"ethereum\"\nnative = \"ETH\"\nnative_decimals = 200\nblock_time = \"12s\"\nconfirmations = 1000000000000\nmax_reorg_depth = 0\nendpoints = [{ name = \"p\", url = \"http://127.0.0.1:8545\" }]\nwallets = []\ntokens = [{ address = \"0xdac17f958d2ee523a2206206994597c13d831ec7\", symbol = \"USDT\", decimals = 99 }]\n",
    );
    assert_eq!(code, Some(1), "{err}");
    for field in [
        "source.evm[0].native_decimals`: 200 is more than 36",
        "source.evm[0].tokens[0].decimals`: 99 is more than 36",
        "source.evm[0].confirmations`: 1000000000000 is more than 100000",
        "source.evm[0].max_reorg_depth`: 0 is not between 1 and 100000",
    ] {
        assert!(err.contains(field), "{field} not in: {err}");
    }
}

#[test]
fn e2e_daemon_bad_config_names_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[api]\nlisten = \"nowhere\"\n[store]\npath = \"x\"\n[source.sim]\npreset = \"heist\"\nspeed = -1.0\n").unwrap();
    let out =
        drainguard_e2e::drainguard(&["check-config", "--config", path.to_str().unwrap()]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["api.listen", "source.sim.preset", "source.sim.speed"] {
        assert!(
            err.contains(&format!("field `{field}`")),
            "{field} not named in: {err}"
        );
    }
    let out = drainguard_e2e::drainguard(&["run", "--config", path.to_str().unwrap()]).unwrap();
    assert!(!out.status.success(), "run refuses a bad config");
    let out = drainguard_e2e::drainguard(&["check-config", "--config", "config/drainguard.toml"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
