//! PagerDuty Events API v2: one page per incident, resolved when it clears.
//!
//! A drain produces dozens of findings in a minute (every stolen
//! transaction, every window, every rule) and often several freezes. The
//! [`Pager`] groups them into incidents, each with one `dedup_key`: the
//! first finding triggers it, the first freeze re-triggers it with the
//! freeze in the summary (same key: the same alert, no second page), and
//! the rest join silently. A blind chain is an incident of its own, per
//! chain, resolved when the chain has heads again; any other incident is
//! resolved once it has been quiet for `resolve_after` and none of its
//! freezes is still in force (a freeze is lifted only by a human).
//!
//! Bodies go into the outbox without the routing key, which is a secret:
//! the [`Deliverer`](crate::Deliverer) adds it when it sends.

use std::{collections::BTreeMap, time::Duration};

use drainguard_model::{Finding, Freeze, FreezeId, Severity, Timestamp};
use drainguard_store::NewAction;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Secret;

/// The outbox channel of PagerDuty events.
pub const CHANNEL: &str = "pagerduty";
/// The path events are posted to, under the configured base URL.
pub const ENQUEUE_PATH: &str = "/v2/enqueue";
/// The documented limit of `payload.summary`.
pub const SUMMARY_MAX: usize = 1024;
/// The documented limit of `dedup_key`.
pub const DEDUP_KEY_MAX: usize = 255;

/// The checked PagerDuty configuration.
#[derive(Debug, Clone)]
pub struct PagerConfig {
    /// The Events API v2 integration key.
    pub routing_key: Secret,
    /// Base URL (`https://events.pagerduty.com`; a local receiver in tests).
    pub url: String,
    /// `payload.source`: this daemon, as on-call sees it.
    pub source: String,
    /// Where a human looks next (the daemon's API or console), for `links`.
    pub console_url: String,
    /// How long an incident must be quiet before it resolves.
    pub resolve_after: Duration,
}

/// One open incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Its PagerDuty deduplication key.
    pub dedup_key: String,
    /// When it opened and when it last saw a finding (ns since the epoch).
    pub opened: i64,
    /// See `opened`.
    pub last: i64,
    /// Findings that joined it.
    pub findings: u64,
    /// Freezes raised during it.
    pub freezes: Vec<String>,
}

/// Open incidents by group, persisted between restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagerState {
    /// Group (`drain`, `blind:<chain>`) to its incident.
    pub open: BTreeMap<String, Incident>,
}

/// A trigger event for the outbox (the routing key is added at send time).
fn trigger(cfg: &PagerConfig, dedup_key: &str, key_suffix: &str, page: &Page<'_>) -> NewAction {
    let body = json!({
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": clip(&page.summary, SUMMARY_MAX),
            "source": cfg.source,
            "severity": pd_severity(page.severity),
            "timestamp": page.t.to_rfc3339(),
            "component": page.component,
            "group": "hot-wallets",
            "class": page.class,
            "custom_details": &page.details,
        },
        "links": &page.links,
        "client": "drainguard",
        "client_url": cfg.console_url,
    });
    NewAction {
        channel: CHANNEL.to_string(),
        key: format!("{dedup_key}:{key_suffix}"),
        kind: "trigger".to_string(),
        body,
    }
}

/// Links to this daemon, for `links`.
fn links(cfg: &PagerConfig, path: &str, text: &str) -> Value {
    json!([{ "href": format!("{}{path}", cfg.console_url.trim_end_matches('/')), "text": text }])
}

/// What one trigger says.
struct Page<'a> {
    summary: String,
    severity: Severity,
    t: Timestamp,
    component: &'a str,
    class: &'a str,
    details: Value,
    links: Value,
}

/// Groups findings into incidents and says what to send.
#[derive(Debug, Clone)]
pub struct Pager {
    cfg: PagerConfig,
    state: PagerState,
    changed: bool,
}

fn pd_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// `s` cut to at most `max` characters, on a character boundary.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn group_of(f: &Finding) -> String {
    match (&*f.kind, &f.chain) {
        ("blind", Some(c)) => format!("blind:{c}"),
        _ => "drain".to_string(),
    }
}

impl Pager {
    /// A pager with the incidents left open by the last run.
    pub fn new(cfg: PagerConfig, state: PagerState) -> Pager {
        Pager {
            cfg,
            state,
            changed: false,
        }
    }

    /// The open incidents (to persist when [`Pager::take_changed`] says so).
    pub fn state(&self) -> &PagerState {
        &self.state
    }

    /// Whether the state changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn links(&self, path: &str, text: &str) -> Value {
        links(&self.cfg, path, text)
    }

    fn trigger(&self, dedup_key: &str, key_suffix: &str, page: &Page<'_>) -> NewAction {
        trigger(&self.cfg, dedup_key, key_suffix, page)
    }

    fn resolve(dedup_key: &str) -> NewAction {
        NewAction {
            channel: CHANNEL.to_string(),
            key: format!("{dedup_key}:resolve"),
            kind: "resolve".to_string(),
            body: json!({"event_action": "resolve", "dedup_key": dedup_key}),
        }
    }

    fn open(&mut self, group: &str, t: Timestamp) -> (String, bool) {
        if let Some(i) = self.state.open.get_mut(group) {
            i.last = i.last.max(t.0);
            return (i.dedup_key.clone(), false);
        }
        let dedup_key = clip(
            &format!("drainguard:{group}:{}", t.0.div_euclid(1_000_000)),
            DEDUP_KEY_MAX,
        );
        self.state.open.insert(
            group.to_string(),
            Incident {
                dedup_key: dedup_key.clone(),
                opened: t.0,
                last: t.0,
                findings: 0,
                freezes: Vec::new(),
            },
        );
        self.changed = true;
        (dedup_key, true)
    }

    /// A finding is durable: the page to send, if it opens an incident.
    /// Shadow findings page nobody (a shadow rule takes no action). `now`
    /// is the wall clock: incidents age in real time, whatever the time
    /// of the events (a replayed or simulated chain runs ahead).
    pub fn on_finding(&mut self, f: &Finding, now: Timestamp) -> Option<NewAction> {
        if f.shadow {
            return None;
        }
        let group = group_of(f);
        let (dedup_key, new) = self.open(&group, now);
        if let Some(i) = self.state.open.get_mut(&group) {
            i.findings += 1;
        }
        if !new {
            return None;
        }
        let chain = f.chain.as_ref().map_or("all chains", |c| c.as_str());
        let details = json!({
            "rule": f.rule,
            "kind": f.kind,
            "scope": f.scope.to_string(),
            "wallet": f.wallet,
            "figures": f.figures.iter().cloned().collect::<BTreeMap<_, _>>(),
            "evidence": f.evidence,
        });
        let summary = format!("drainguard: {} [{}]", f.summary, f.rule);
        let links = self.links("/v1/findings", "findings");
        Some(self.trigger(
            &dedup_key,
            "open",
            &Page {
                summary,
                severity: f.severity,
                t: f.t,
                component: chain,
                class: &f.kind,
                details,
                links,
            },
        ))
    }

    /// A freeze is durable: the first freeze of an incident re-triggers it
    /// (same dedup key) so on-call sees that withdrawals are halted.
    pub fn on_freeze(&mut self, fz: &Freeze, now: Timestamp) -> Option<NewAction> {
        let group = fz.findings.first().map_or("drain".to_string(), group_of);
        let (dedup_key, _) = self.open(&group, now);
        let first = {
            let i = self.state.open.get_mut(&group)?;
            let first = i.freezes.is_empty();
            if !i.freezes.contains(&fz.id.0) {
                i.freezes.push(fz.id.0.clone());
                self.changed = true;
            }
            first
        };
        if !first {
            return None;
        }
        let summary = format!(
            "drainguard FROZE withdrawals in {}: {} [{}]",
            fz.scope, fz.reason, fz.rule
        );
        let details = json!({
            "freeze_id": fz.id.0,
            "scope": fz.scope.to_string(),
            "rule": fz.rule,
            "reason": fz.reason,
            "findings": fz.findings.len(),
            "evidence": fz.findings.iter().flat_map(|f| f.evidence.iter()).take(20).collect::<Vec<_>>(),
            "recommended_action": "keep withdrawals halted in the scope; move the remaining hot-wallet funds of the affected wallets to cold storage; lift only after review",
        });
        let component = fz
            .findings
            .first()
            .and_then(|f| f.chain.as_ref())
            .map_or("all chains", |c| c.as_str());
        let links = self.links("/v1/freezes", "freezes");
        Some(self.trigger(
            &dedup_key,
            &format!("freeze:{}", fz.id.0),
            &Page {
                summary,
                severity: Severity::Critical,
                t: fz.t,
                component,
                class: "freeze",
                details,
                links,
            },
        ))
    }

    /// A blind chain has heads again: resolve its incident.
    pub fn on_recovered(&mut self, kind: &str, chain: &str) -> Option<NewAction> {
        let group = format!("{kind}:{chain}");
        let i = self.state.open.remove(&group)?;
        self.changed = true;
        Some(Pager::resolve(&i.dedup_key))
    }

    /// Resolves the incidents that aged out: quiet for `resolve_after`
    /// and with none of their freezes in force. Blind chains resolve on
    /// recovery instead.
    pub fn tick(&mut self, now: Timestamp, active: &[FreezeId]) -> Vec<NewAction> {
        let quiet_ns = i64::try_from(self.cfg.resolve_after.as_nanos()).unwrap_or(i64::MAX);
        let aged: Vec<String> = self
            .state
            .open
            .iter()
            .filter(|(g, i)| {
                g.as_str() == "drain"
                    && now.0.saturating_sub(i.last) >= quiet_ns
                    && !i.freezes.iter().any(|f| active.iter().any(|a| &a.0 == f))
            })
            .map(|(g, _)| g.clone())
            .collect();
        let mut out = Vec::new();
        for g in aged {
            if let Some(i) = self.state.open.remove(&g) {
                self.changed = true;
                out.push(Pager::resolve(&i.dedup_key));
            }
        }
        out
    }
}

/// The page for an outbox action that failed for good (a 4xx from the
/// exchange's endpoint: a wrong secret, a changed URL): a human must look.
/// Its own incident, keyed by the action, so each failure pages once.
pub fn delivery_failed(
    cfg: &PagerConfig,
    t: Timestamp,
    outbox_id: i64,
    channel: &str,
    key: &str,
    error: &str,
) -> NewAction {
    let dedup_key = format!("drainguard:delivery:{outbox_id}");
    let summary = format!(
        "drainguard could not deliver {channel} action {key}: {error}; fix it, then re-drive it (drainguard outbox redrive {outbox_id})"
    );
    trigger(
        cfg,
        &dedup_key,
        "open",
        &Page {
            summary,
            severity: Severity::Critical,
            t,
            component: channel,
            class: "delivery_failed",
            details: json!({"outbox_id": outbox_id, "channel": channel, "key": key, "error": error}),
            links: links(cfg, "/v1/outbox", "outbox"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use drainguard_model::{Chain, Scope};

    fn cfg() -> PagerConfig {
        PagerConfig {
            routing_key: Secret::new("r".repeat(32)),
            url: "http://127.0.0.1:1".into(),
            source: "drainguard-test".into(),
            console_url: "http://127.0.0.1:9464".into(),
            resolve_after: Duration::from_secs(1800),
        }
    }

    fn finding(t: i64, kind: &str, chain: &str) -> Finding {
        Finding {
            t: Timestamp::from_unix_secs(t),
            rule: format!("{kind}-rule"),
            kind: kind.into(),
            severity: Severity::Critical,
            scope: Scope::Chain(Chain::new(chain)),
            chain: Some(Chain::new(chain)),
            wallet: None,
            summary: "x".repeat(2000),
            shadow: false,
            wants_freeze: true,
            figures: vec![("usd".into(), "1".into())],
            evidence: Vec::new(),
        }
    }

    fn freeze(id: &str, f: &Finding) -> Freeze {
        Freeze {
            id: FreezeId(id.into()),
            t: f.t,
            scope: f.scope.clone(),
            reason: "r".into(),
            rule: f.rule.clone(),
            severity: Severity::Critical,
            findings: vec![f.clone()],
            supersedes: Vec::new(),
        }
    }

    #[test]
    fn one_incident_pages_once_and_resolves_when_quiet_and_unfrozen() {
        let mut p = Pager::new(cfg(), PagerState::default());
        let at = Timestamp::from_unix_secs;
        let first = p.on_finding(&finding(1000, "unmatched_outflow", "ethereum"), at(1000));
        let first = first.expect("the first finding opens the incident");
        let dedup = first.body["dedup_key"].as_str().unwrap().to_string();
        let summary = first.body["payload"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), SUMMARY_MAX, "clipped");
        assert!(
            first.body.get("routing_key").is_none(),
            "no secret in the outbox"
        );
        for t in 1001..1100 {
            assert!(
                p.on_finding(&finding(t, "velocity", "tron"), at(t))
                    .is_none()
            );
        }
        let f = finding(1100, "outflow_window", "ethereum");
        let esc = p
            .on_freeze(&freeze("fz-1", &f), at(1100))
            .expect("first freeze re-triggers");
        assert_eq!(esc.body["dedup_key"], dedup.as_str());
        assert_eq!(esc.body["payload"]["severity"], "critical");
        assert!(p.on_freeze(&freeze("fz-2", &f), at(1100)).is_none());
        assert_eq!(p.state().open["drain"].findings, 100);

        let active = [FreezeId("fz-1".into())];
        let later = Timestamp::from_unix_secs(1100 + 3600);
        assert!(
            p.tick(later, &active).is_empty(),
            "a freeze in force keeps it open"
        );
        let resolved = p.tick(later, &[]);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].body["event_action"], "resolve");
        assert_eq!(resolved[0].body["dedup_key"], dedup.as_str());
        assert!(p.state().open.is_empty());
        // The next finding is a new incident.
        let next = p.on_finding(&finding(9000, "unmatched_outflow", "ethereum"), at(9000));
        assert_ne!(next.unwrap().body["dedup_key"], dedup.as_str());
    }

    #[test]
    fn a_blind_chain_is_its_own_incident_resolved_on_recovery() {
        let mut p = Pager::new(cfg(), PagerState::default());
        let at = Timestamp::from_unix_secs;
        let a = p
            .on_finding(&finding(10, "blind", "bitcoin"), at(10))
            .unwrap();
        assert!(
            p.on_finding(&finding(11, "unmatched_outflow", "bitcoin"), at(11))
                .is_some()
        );
        assert!(p.tick(Timestamp::from_unix_secs(100_000), &[]).len() == 1);
        assert!(p.state().open.contains_key("blind:bitcoin"), "not aged out");
        let r = p.on_recovered("blind", "bitcoin").unwrap();
        assert_eq!(r.body["dedup_key"], a.body["dedup_key"]);
        assert_eq!(
            r.key,
            format!("{}:resolve", a.body["dedup_key"].as_str().unwrap())
        );
        assert!(p.on_recovered("blind", "bitcoin").is_none());
    }

    #[test]
    fn shadow_findings_page_nobody() {
        let mut p = Pager::new(cfg(), PagerState::default());
        let mut f = finding(1, "velocity", "ethereum");
        f.shadow = true;
        assert!(p.on_finding(&f, Timestamp::from_unix_secs(1)).is_none());
        assert!(!p.take_changed());
    }
}
