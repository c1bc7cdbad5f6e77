//! Hot reload of the rules in the running daemon, on SIGHUP and through
//! `POST /v1/admin/reload`: an invalid file keeps the running rules and
//! says why (log, HTTP answer, audit log), a valid one is put in force, and
//! the daemon keeps running either way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use drainguard_e2e::{Daemon, metric_sum, repo_root};
use drainguard_store::{AuditEntry, Store};

const TOKEN_ENV: &str = "DRAINGUARD_ADMIN_TOKEN";
const TOKEN: &str = "s3cret-e2e-token";
const WAIT: Duration = Duration::from_secs(30);

/// A rule with two errors: an unknown scope and a window that is no
/// duration.
const INVALID_RULE: &str = r#"
[[rule]]
id = "bad-velocity"
kind = "velocity"
scope = "planet"
severity = "warning"
action = "alert"
[rule.params]
window = "soon"
max_count = 5
"#;

/// A valid extra rule.
const EXTRA_RULE: &str = r#"
[[rule]]
id = "extra-velocity"
kind = "velocity"
description = "Added by a reload"
scope = "wallet"
severity = "info"
action = "alert"
[rule.params]
window = "1m"
max_count = 100000
"#;

fn default_rules() -> String {
    std::fs::read_to_string(repo_root().join("config/rules.toml")).unwrap()
}

/// The ids of the rules in a rules file.
fn rule_ids(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("id = \""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

/// A daemon configuration in `dir`, with `rules.toml` (a copy of the
/// default rules) and `denylist.txt` beside it when `with_rules_file`.
fn setup(dir: &Path, with_rules_file: bool) -> (PathBuf, PathBuf) {
    let rules = dir.join("rules.toml");
    let rules_section = if with_rules_file {
        std::fs::write(&rules, default_rules()).unwrap();
        std::fs::copy(
            repo_root().join("config/denylist.txt"),
            dir.join("denylist.txt"),
        )
        .unwrap();
        "[rules]\npath = \"rules.toml\"\n"
    } else {
        ""
    };
    let cfg = dir.join("drainguard.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[api]
listen = "127.0.0.1:0"
[store]
path = "state/drainguard.sqlite"
{rules_section}
[bus]
capacity = 64
[source.sim]
preset = "normal"
seed = 11
speed = 300.0
hours = 24.0
"#
        ),
    )
    .unwrap();
    (cfg, rules)
}

fn has_series(metrics: &str, rule: &str) -> bool {
    metrics.contains(&format!("drainguard_findings_total{{rule=\"{rule}\""))
}

fn metrics(d: &Daemon) -> String {
    let (status, body) = d.get("/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The engine is alive: it keeps processing events.
fn assert_engine_keeps_going(d: &Daemon) {
    let before = metric_sum(&metrics(d), "drainguard_events_total");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if metric_sum(&metrics(d), "drainguard_events_total") > before {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the engine processed no event for {WAIT:?}"
        );
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn audit_of(dir: &Path, action: &str) -> Vec<AuditEntry> {
    let store = Store::open(&dir.join("state/drainguard.sqlite")).unwrap();
    store
        .audit(None)
        .unwrap()
        .into_iter()
        .filter(|a| a.action == action)
        .collect()
}

fn stop(d: Daemon) {
    let exit = d.signal_and_wait("TERM", Duration::from_secs(20)).unwrap();
    assert!(exit.success(), "SIGTERM is a clean stop: {exit}");
}

#[test]
fn e2e_daemon_sighup_with_invalid_rules_keeps_the_running_rules_and_a_valid_file_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, rules) = setup(dir.path(), true);
    let defaults = default_rules();
    let ids = rule_ids(&defaults);
    assert!(ids.len() >= 5, "{ids:?}");
    let mut d = Daemon::start_with_env(&cfg, &[(TOKEN_ENV, TOKEN)]).unwrap();
    d.wait_for_log("simulator playing", WAIT).unwrap();
    let m = metrics(&d);
    for id in &ids {
        assert!(has_series(&m, id), "no series for {id}");
    }

    // An invalid file: nothing changes, the error names the rule and fields.
    std::fs::write(&rules, format!("{defaults}{INVALID_RULE}")).unwrap();
    let from = d.log().len();
    d.signal("HUP").unwrap();
    let line = d
        .wait_for_log_since(from, "rules reload failed", WAIT)
        .unwrap();
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("actor=\"signal\""), "{line}");
    let file = rules.display().to_string();
    for needle in [
        format!("{file}: rule bad-velocity: field `scope`"),
        format!("{file}: rule bad-velocity: field `params.window`"),
    ] {
        assert!(line.contains(&needle), "{needle:?} not in {line}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.is_running(), "SIGHUP must not stop the daemon");
    let (status, body) = d.get("/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    let m = metrics(&d);
    for id in &ids {
        assert!(has_series(&m, id), "the series of {id} is gone");
    }
    assert!(
        !has_series(&m, "bad-velocity"),
        "the invalid rule is not in force"
    );
    assert_engine_keeps_going(&d);

    // A valid file with one more rule: in force at once.
    std::fs::write(&rules, format!("{defaults}{EXTRA_RULE}")).unwrap();
    let from = d.log().len();
    d.signal("HUP").unwrap();
    let line = d.wait_for_log_since(from, "rules reloaded", WAIT).unwrap();
    assert!(line.contains("actor=\"signal\""), "{line}");
    assert!(line.contains(&format!("rules={}", ids.len() + 1)), "{line}");
    assert!(d.is_running());
    assert!(has_series(&metrics(&d), "extra-velocity"));
    assert_engine_keeps_going(&d);

    // Another SIGHUP, same file: reloads again, still running.
    let from = d.log().len();
    d.signal("HUP").unwrap();
    d.wait_for_log_since(from, "rules reloaded", WAIT).unwrap();
    assert!(d.is_running());
    stop(d);

    let failed = audit_of(dir.path(), "rules.reload_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].actor, "signal");
    assert_eq!(failed[0].subject, file);
    let errors = failed[0].detail["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let reloaded = audit_of(dir.path(), "rules.reloaded");
    assert_eq!(reloaded.len(), 2, "{reloaded:?}");
    assert!(reloaded.iter().all(|a| a.actor == "signal"));
    assert_eq!(reloaded[0].detail["rules"], ids.len() + 1);
}

#[test]
fn e2e_daemon_admin_reload_checks_the_token_rejects_invalid_rules_and_reloads_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, rules) = setup(dir.path(), true);
    let defaults = default_rules();
    let ids = rule_ids(&defaults);
    let mut d = Daemon::start_with_env(&cfg, &[(TOKEN_ENV, TOKEN)]).unwrap();
    d.wait_for_log("simulator playing", WAIT).unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let admin = [("Authorization", bearer.as_str())];

    std::fs::write(&rules, format!("{defaults}{INVALID_RULE}")).unwrap();

    // Who may call it.
    for headers in [
        &[][..],
        &[("Authorization", "Basic czNjcmV0")][..],
        &[("Authorization", TOKEN)][..],
        &[("Authorization", "Bearer ")][..],
    ] {
        let (status, body) = d.post("/v1/admin/reload", headers).unwrap();
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert!(json(&body)["error"].is_string(), "{body}");
    }
    for wrong in [
        "Bearer nope",
        "Bearer s3cret-e2e-tokeN",
        "Bearer s3cret-e2e-token-",
    ] {
        let (status, body) = d
            .post("/v1/admin/reload", &[("Authorization", wrong)])
            .unwrap();
        assert_eq!(status, 403, "{wrong}: {body}");
        assert!(json(&body)["error"].is_string(), "{body}");
    }

    // Invalid rules: 422 with every error; the running rules stay.
    let from = d.log().len();
    let (status, body) = d.post("/v1/admin/reload", &admin).unwrap();
    assert_eq!(status, 422, "{body}");
    let v = json(&body);
    assert!(
        v["error"].as_str().unwrap().contains("running rules"),
        "{body}"
    );
    let errors: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let file = rules.display().to_string();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("{file}: rule bad-velocity: field `scope`: ")),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(&format!(
            "{file}: rule bad-velocity: field `params.window`: "
        )),
        "{errors:?}"
    );
    let line = d
        .wait_for_log_since(from, "rules reload failed", WAIT)
        .unwrap();
    assert!(line.contains("actor=\"admin\""), "{line}");
    for e in &errors {
        assert!(line.contains(e.as_str()), "{e:?} not in {line}");
    }
    let m = metrics(&d);
    assert!(!has_series(&m, "bad-velocity"));
    for id in &ids {
        assert!(has_series(&m, id), "the series of {id} is gone");
    }
    assert!(d.is_running());

    // check-config says the same, word for word, and fails.
    let out =
        drainguard_e2e::drainguard(&["check-config", "--config", cfg.to_str().unwrap()]).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let printed: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .collect();
    assert_eq!(printed, errors, "check-config: {stderr}");

    // A valid file with one more rule.
    std::fs::write(&rules, format!("{defaults}{EXTRA_RULE}")).unwrap();
    let (status, body) = d.post("/v1/admin/reload", &admin).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({"reloaded": true, "rules": ids.len() + 1})
    );
    assert!(has_series(&metrics(&d), "extra-velocity"));
    assert_engine_keeps_going(&d);
    assert!(
        d.log().iter().all(|l| !l.contains(TOKEN)),
        "the token is never logged"
    );
    stop(d);

    let failed = audit_of(dir.path(), "rules.reload_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].actor, "admin");
    assert_eq!(failed[0].subject, file);
    assert_eq!(failed[0].detail["errors"], serde_json::json!(errors));
    let reloaded = audit_of(dir.path(), "rules.reloaded");
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert_eq!(reloaded[0].actor, "admin");
    assert_eq!(reloaded[0].subject, file);
    assert_eq!(reloaded[0].detail["rules"], ids.len() + 1);
    assert!(failed[0].seq < reloaded[0].seq);
}

#[test]
fn e2e_daemon_reload_revalidates_builtin_rules_and_admin_api_is_off_without_token() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = setup(dir.path(), false);
    let n = rule_ids(&default_rules()).len();
    let mut d = Daemon::start(&cfg).unwrap();
    d.wait_for_log("simulator playing", WAIT).unwrap();

    // No token in the environment: the admin API is disabled.
    for headers in [&[][..], &[("Authorization", "Bearer anything")][..]] {
        let (status, body) = d.post("/v1/admin/reload", headers).unwrap();
        assert_eq!(status, 403, "{body}");
        assert!(
            json(&body)["error"].as_str().unwrap().contains("disabled"),
            "{body}"
        );
    }

    let from = d.log().len();
    d.signal("HUP").unwrap();
    d.wait_for_log_since(from, "re-validating them", WAIT)
        .unwrap();
    let line = d.wait_for_log_since(from, "rules reloaded", WAIT).unwrap();
    assert!(line.contains(&format!("rules={n}")), "{line}");
    assert!(line.contains("the built-in rules"), "{line}");
    assert!(d.is_running());
    stop(d);
    let reloaded = audit_of(dir.path(), "rules.reloaded");
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert_eq!(reloaded[0].subject, "the built-in rules");
}
