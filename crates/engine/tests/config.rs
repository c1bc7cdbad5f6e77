//! Rules files: the defaults load, and every error names file, rule, field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drainguard_engine::{ConfigErrors, RuleSet};

fn errors(toml: &str) -> ConfigErrors {
    RuleSet::from_toml("rules.toml", toml, &|p| Err(format!("{p}: no such file"))).unwrap_err()
}

#[test]
fn builtin_rules_load() {
    let rules = RuleSet::builtin().unwrap();
    assert!(rules.rules.len() >= 6);
    let kinds: Vec<&str> = rules.rules.iter().map(|r| r.kind.name()).collect();
    for k in [
        "unmatched_outflow",
        "outflow_window",
        "velocity",
        "new_destination",
        "denylist",
        "correlation",
    ] {
        assert!(kinds.contains(&k), "default rules lack {k}");
    }
}

#[test]
fn every_error_is_collected_with_its_place() {
    let e = errors(
        r#"
[[rule]]
id = "a"
kind = "velocity"
scope = "planet"
severity = "critical"
action = "freeze"
[rule.params]
window = "ten minutes"
max_count = 0

[[rule]]
id = "a"
kind = "teleport"
scope = "wallet"
severity = "loud"
action = "alert"

[[rule]]
kind = "denylist"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
files = ["missing.txt"]
bogus = 1
"#,
    );
    let text = e.to_string();
    let has = |rule: &str, field: &str| {
        e.0.iter()
            .any(|x| x.rule.as_deref() == Some(rule) && x.field.as_deref() == Some(field))
    };
    assert!(has("a", "scope"), "{text}");
    assert!(has("a", "params.window"), "{text}");
    assert!(has("a", "params.max_count"), "{text}");
    assert!(has("a", "id"), "duplicate id: {text}");
    assert!(has("a", "kind"), "{text}");
    assert!(has("a", "severity"), "{text}");
    assert!(has("#3", "id"), "{text}");
    assert!(has("#3", "params.files[0]"), "{text}");
    assert!(has("#3", "params.bogus"), "{text}");
    assert!(
        text.contains("rules.toml: rule a: field `scope`: \"planet\" is not one of"),
        "{text}"
    );
    assert_eq!(e.0.len(), 9, "{text}");
}

#[test]
fn unknown_top_level_and_rule_fields_are_refused() {
    let e = errors("[[rule]]\nid = \"x\"\nkindd = \"velocity\"\n");
    assert!(e.to_string().contains("unknown field `kindd`"), "{e}");
    let e = errors("[intents]\nmatch_window = \"soon\"\n");
    assert_eq!(e.0[0].field.as_deref(), Some("intents.match_window"));
    let e = errors("not toml at all [");
    assert!(
        e.0[0].message.contains("TOML") || e.0[0].message.contains("expected"),
        "{e}"
    );
}

#[test]
fn correlation_must_be_global_and_windows_need_a_limit() {
    let e = errors(
        r#"
[[rule]]
id = "c"
kind = "correlation"
scope = "chain"
severity = "critical"
action = "freeze"

[[rule]]
id = "w"
kind = "outflow_window"
scope = "wallet"
severity = "warning"
action = "alert"
[rule.params]
window = "1h"
"#,
    );
    assert!(
        e.0.iter()
            .any(|x| x.rule.as_deref() == Some("c") && x.field.as_deref() == Some("scope")),
        "{e}"
    );
    assert!(
        e.0.iter()
            .any(|x| x.rule.as_deref() == Some("w") && x.field.as_deref() == Some("params")),
        "{e}"
    );
}

#[test]
fn an_invalid_share_is_one_error_and_a_missing_limit_another() {
    let window = |params: &str| {
        format!(
            "[[rule]]\nid = \"w\"\nkind = \"outflow_window\"\nscope = \"wallet\"\nseverity = \"critical\"\naction = \"alert\"\n[rule.params]\nwindow = \"1h\"\nper_asset = true\n{params}\n"
        )
    };
    for (params, field, message) in [
        (
            "max_share = 1.7",
            "params.max_share",
            "1.7 is not a share in (0, 1]",
        ),
        ("", "params", "give max_usd, max_share or both"),
    ] {
        let e = errors(&window(params));
        let fields: Vec<&str> = e.0.iter().filter_map(|x| x.field.as_deref()).collect();
        assert_eq!(fields, [field], "{e}");
        assert!(e.to_string().contains(message), "{e}");
    }
}
