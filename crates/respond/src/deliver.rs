//! The delivery worker: takes due actions from the outbox and attempts
//! them until a receiver accepts them.
//!
//! An attempt that ends in a 2xx is recorded as delivered. A network error,
//! a timeout, a 408, a 429 or a 5xx is temporary: the action is retried
//! with exponential backoff and jitter, for as long as it takes. Any other
//! 4xx is permanent (a wrong secret, a moved endpoint, a malformed event):
//! the action stays in the outbox marked failed, a human is paged, and an
//! operator re-drives it once the cause is fixed. Nothing is deleted.
//!
//! The worker owns its own connection to the store; the engine wakes it
//! when it queues something, and it also looks every second.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use drainguard_model::Timestamp;
use drainguard_store::{Attempt, NewAction, OutboxAction, Store, StoreError};
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::DeliveryMetrics,
    pagerduty::{self, PagerConfig},
    webhook::{self, WebhookConfig},
};

/// How long to wait before the next attempt: doubling from `initial` up
/// to `max`, each delay drawn between its half and its whole (jitter, so a
/// fleet of retries does not arrive in lockstep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay after `attempts` failed attempts (1 for the first).
    pub fn delay(&self, attempts: u32, rng: &mut impl Rng) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let full = self
            .initial
            .saturating_mul(1u32 << exp.min(20))
            .min(self.max);
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rng.r#gen::<f64>())
    }
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The HTTP client could not be built (TLS roots, say).
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What one HTTP exchange came to.
enum Sent {
    Accepted,
    Temporary(String),
    Permanent(String),
}

fn classify(status: reqwest::StatusCode, body: &str) -> Sent {
    let snippet: String = body.chars().take(200).collect();
    if status.is_success() {
        Sent::Accepted
    } else if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        Sent::Temporary(format!("HTTP {status}: {snippet}"))
    } else {
        Sent::Permanent(format!("HTTP {status}: {snippet}"))
    }
}

/// The outbox delivery worker.
#[derive(Debug)]
pub struct Deliverer {
    store: Store,
    client: reqwest::Client,
    webhook: Option<WebhookConfig>,
    pager: Option<PagerConfig>,
    backoff: Backoff,
    metrics: DeliveryMetrics,
    wake: Arc<Notify>,
    unconfigured: BTreeSet<String>,
}

impl Deliverer {
    /// A worker on its own store connection. Channels left unconfigured
    /// keep their actions pending (and say so once).
    pub fn new(
        store: Store,
        webhook: Option<WebhookConfig>,
        pager: Option<PagerConfig>,
        backoff: Backoff,
        timeout: Duration,
        metrics: DeliveryMetrics,
        wake: Arc<Notify>,
    ) -> Result<Deliverer, DeliverError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("drainguard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Deliverer {
            store,
            client,
            webhook,
            pager,
            backoff,
            metrics,
            wake,
            unconfigured: BTreeSet::new(),
        })
    }

    /// Delivers until cancelled; an attempt in flight is finished (or
    /// abandoned at its timeout) first. Whatever is still pending is
    /// delivered by the next run.
    pub async fn run(mut self, token: CancellationToken) {
        #[cfg(feature = "failpoints")]
        if std::env::var_os("DRAINGUARD_FAILPOINT_HOLD_DELIVERY").is_some() {
            // Test-only: hold every action between the store and the wire,
            // so a test can kill the daemon exactly there.
            tracing::warn!(message = "failpoint: holding deliveries");
            token.cancelled().await;
            return;
        }
        loop {
            let wait = match self.pass(&token).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!(message = "outbox unreadable; retrying", error = %e);
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = token.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(message = "delivery worker stopped");
    }

    /// One pass over the due actions; how long until the next is due
    /// (at most a second, to notice rows queued by another process).
    async fn pass(&mut self, token: &CancellationToken) -> Result<Duration, StoreError> {
        loop {
            let due = self.store.due_actions(now_ms(), 16)?;
            let mut attempted = 0;
            for a in &due {
                if token.is_cancelled() {
                    return Ok(Duration::ZERO);
                }
                let Some(attempt) = self.attempt(a).await else {
                    continue;
                };
                attempted += 1;
                self.record(a, &attempt)?;
            }
            self.update_backlog();
            if attempted == 0 || due.len() < 16 {
                break;
            }
        }
        let next = self.store.next_due_ms()?;
        let wait = next.map_or(1000, |t| t.saturating_sub(now_ms()).clamp(0, 1000));
        Ok(Duration::from_millis(u64::try_from(wait).unwrap_or(1000)))
    }

    fn update_backlog(&self) {
        if let Ok(c) = self.store.outbox_counts() {
            let set = |s: &str, n: u64| {
                self.metrics
                    .backlog
                    .with_label_values(&[s])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            };
            set("pending", c.pending);
            set("failed", c.failed);
        }
    }

    /// Records an attempt (retrying while the database is busy), counts
    /// it, and pages a human for a permanent failure.
    fn record(&mut self, a: &OutboxAction, attempt: &Attempt) -> Result<(), StoreError> {
        let mut delay = Duration::from_millis(10);
        let mut tries = 0;
        loop {
            match self.store.record_attempt(a.id, attempt) {
                Ok(_) => break,
                Err(e) if e.is_retriable() && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        let outcome = match attempt {
            Attempt::Delivered { endpoint } => {
                if let Ok(queued) = Timestamp::parse_rfc3339(&a.created_at) {
                    let secs = Timestamp::now().0.saturating_sub(queued.0) as f64 / 1e9;
                    self.metrics
                        .latency
                        .with_label_values(&[&a.channel])
                        .observe(secs.max(0.0));
                }
                tracing::info!(message = "delivered", channel = %a.channel, kind = %a.kind, key = %a.key, endpoint = %endpoint, attempts = a.attempts + 1);
                "delivered"
            }
            Attempt::Retry {
                error,
                next_attempt_ms,
            } => {
                tracing::warn!(message = "delivery failed; will retry", channel = %a.channel, key = %a.key, attempts = a.attempts + 1, error = %error, retry_in_ms = next_attempt_ms.saturating_sub(now_ms()));
                "retry"
            }
            Attempt::Failed { error } => {
                tracing::error!(message = "delivery failed for good: a human must re-drive it", channel = %a.channel, key = %a.key, outbox_id = a.id, error = %error);
                self.page_failure(a, error);
                "failed"
            }
        };
        self.metrics
            .attempts
            .with_label_values(&[&a.channel, outcome])
            .inc();
        Ok(())
    }

    fn page_failure(&mut self, a: &OutboxAction, error: &str) {
        let Some(cfg) = &self.pager else { return };
        if a.channel == pagerduty::CHANNEL {
            // PagerDuty itself refused: the log line above is all there is.
            return;
        }
        let page: NewAction =
            pagerduty::delivery_failed(cfg, Timestamp::now(), a.id, &a.channel, &a.key, error);
        if let Err(e) = self.store.queue_actions(&[page]) {
            tracing::error!(message = "queuing the page about a failed delivery failed", error = %e);
        }
    }

    /// Attempts one action; `None` when its channel is not configured.
    async fn attempt(&mut self, a: &OutboxAction) -> Option<Attempt> {
        let sent = match a.channel.as_str() {
            webhook::CHANNEL if self.webhook.is_some() => self.send_webhook(a).await,
            pagerduty::CHANNEL if self.pager.is_some() => self.send_page(a).await,
            other => {
                if self.unconfigured.insert(other.to_string()) {
                    tracing::warn!(
                        message = "outbox actions wait for a channel that is not configured",
                        channel = other
                    );
                }
                return None;
            }
        };
        Some(match sent {
            (Sent::Accepted, endpoint) => Attempt::Delivered { endpoint },
            (Sent::Temporary(error), _) => {
                let delay = self.backoff.delay(a.attempts + 1, &mut rand::thread_rng());
                let ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                Attempt::Retry {
                    error,
                    next_attempt_ms: now_ms().saturating_add(ms),
                }
            }
            (Sent::Permanent(error), _) => Attempt::Failed { error },
        })
    }

    async fn post(&self, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Sent {
        let mut req = self
            .client
            .post(url)
            .header("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.body(body).send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                classify(status, &text)
            }
            // Connection refused, reset, timeout: the endpoint may be back
            // later. The error names the cause, not the URL: it may carry
            // a credential, and this text is logged and kept in the outbox.
            Err(e) => Sent::Temporary(e.without_url().to_string()),
        }
    }

    /// Tries each endpoint in order; the first 2xx wins. Temporary if any
    /// endpoint failed temporarily, permanent only if all refused.
    async fn send_webhook(&self, a: &OutboxAction) -> (Sent, String) {
        let Some(cfg) = &self.webhook else {
            return (
                Sent::Temporary("webhook not configured".into()),
                String::new(),
            );
        };
        let body = serde_json::to_vec(&a.body).unwrap_or_default();
        let mut errors = Vec::new();
        let mut temporary = false;
        for ep in &cfg.endpoints {
            let t = Timestamp::now().0.div_euclid(1_000_000_000);
            let signature = webhook::sign(cfg.secret.expose(), t, &body);
            let headers = [
                (webhook::SIGNATURE_HEADER, signature.as_str()),
                (webhook::IDEMPOTENCY_HEADER, a.key.as_str()),
            ];
            match self.post(&ep.url, &headers, body.clone()).await {
                Sent::Accepted => return (Sent::Accepted, ep.name.clone()),
                Sent::Temporary(e) => {
                    temporary = true;
                    errors.push(format!("{}: {e}", ep.name));
                }
                Sent::Permanent(e) => errors.push(format!("{}: {e}", ep.name)),
            }
        }
        let error = errors.join("; ");
        if temporary {
            (Sent::Temporary(error), String::new())
        } else {
            (Sent::Permanent(error), String::new())
        }
    }

    async fn send_page(&self, a: &OutboxAction) -> (Sent, String) {
        let Some(cfg) = &self.pager else {
            return (
                Sent::Temporary("pagerduty not configured".into()),
                String::new(),
            );
        };
        let mut body = a.body.clone();
        if let Some(obj) = body.as_object_mut() {
            let key = String::from_utf8_lossy(cfg.routing_key.expose()).into_owned();
            obj.insert("routing_key".into(), serde_json::Value::String(key));
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let url = format!(
            "{}{}",
            cfg.url.trim_end_matches('/'),
            pagerduty::ENQUEUE_PATH
        );
        (self.post(&url, &[], bytes).await, "pagerduty".to_string())
    }
}

fn now_ms() -> i64 {
    Timestamp::now().0.div_euclid(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for attempts in 1..40u32 {
            let full = Duration::from_secs(1u64 << (attempts - 1).min(20)).min(b.max);
            for _ in 0..20 {
                let d = b.delay(attempts, &mut rng);
                assert!(d >= full / 2 && d <= full, "{attempts}: {d:?} vs {full:?}");
            }
        }
    }

    #[test]
    fn a_failed_post_says_why_and_never_the_url() {
        #![allow(clippy::unwrap_used)]
        let d = Deliverer::new(
            Store::open_in_memory().unwrap(),
            None,
            None,
            Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            Duration::from_secs(5),
            DeliveryMetrics::register(&prometheus::Registry::new(), &[]).unwrap(),
            Arc::new(Notify::new()),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Nothing listens on port 1.
        let sent = rt.block_on(d.post("http://127.0.0.1:1/hook?token=SECRET", &[], Vec::new()));
        let Sent::Temporary(e) = sent else {
            panic!("a refused connection is temporary");
        };
        assert!(e.contains("error sending request"), "{e}");
        assert!(!e.contains("SECRET") && !e.contains("127.0.0.1"), "{e}");
    }

    #[test]
    fn only_408_429_and_5xx_are_retried() {
        use reqwest::StatusCode as S;
        for (s, temporary, permanent) in [
            (S::OK, false, false),
            (S::ACCEPTED, false, false),
            (S::REQUEST_TIMEOUT, true, false),
            (S::TOO_MANY_REQUESTS, true, false),
            (S::INTERNAL_SERVER_ERROR, true, false),
            (S::SERVICE_UNAVAILABLE, true, false),
            (S::BAD_REQUEST, false, true),
            (S::UNAUTHORIZED, false, true),
            (S::NOT_FOUND, false, true),
        ] {
            let got = classify(s, "");
            assert_eq!(matches!(got, Sent::Temporary(_)), temporary, "{s}");
            assert_eq!(matches!(got, Sent::Permanent(_)), permanent, "{s}");
        }
    }
}
