//! The endpoints of one chain, with failover that really fails over: every
//! call goes to the endpoint that answered last, and on an error or a
//! timeout to the next one, and so on round the list; an endpoint that
//! fails is tried again only after the others. (alloy's own fallback layer
//! with one active transport stays on a dead first endpoint.) Each endpoint
//! keeps to a request rate, and its requests, errors and latency are
//! metrics.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use alloy::providers::RootProvider;
use drainguard_model::Timestamp;

use crate::{EvmError, config::Endpoint, metrics::EvmMetrics};

struct Ep {
    name: String,
    /// As configured: kept only to take it out of error texts.
    url: String,
    provider: RootProvider,
    bucket: Bucket,
}

// By name only: the URL (in it, and in its provider) may hold an API key.
impl std::fmt::Debug for Ep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ep")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An error's text without the endpoint's URL, which may hold an API key:
/// the HTTP client appends ` for url (...)` to a failed request's error,
/// and a node may echo the URL.
pub(crate) fn without_url(text: &str, url: &str) -> String {
    let mut text = text.to_string();
    const MARK: &str = " for url (";
    while let Some(start) = text.find(MARK) {
        // Up to the parenthesis that closes it (a URL may hold some).
        let mut depth = 0usize;
        let mut end = text.len();
        for (i, c) in text[start + MARK.len() - 1..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + MARK.len() - 1 + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text.replace_range(start..end, "");
    }
    let bare = url.trim_end_matches('/');
    if bare.is_empty() {
        text
    } else {
        text.replace(bare, "<endpoint url>")
    }
}

/// A token bucket: `rate` requests a second on average, with bursts of up
/// to a second's worth, the way providers count their limits. A strict
/// gap between requests would add 1/rate to every step of a block's reads
/// (40 ms at 25 a second) and so to the time a theft takes to be seen.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    /// Takes a token; how long to wait first, if the bucket is empty.
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Whether every endpoint of a chain is failing: since when and on which
/// call. Shared with the daemon, which tells the engine's blind rules; it
/// names the JSON-RPC method only, never an endpoint's URL (which may
/// hold an API key).
#[derive(Debug, Default)]
pub struct Outage(Mutex<Option<(Timestamp, String)>>);

impl Outage {
    /// Since when every endpoint has failed, and the last call that did;
    /// `None` while one answers.
    pub fn current(&self) -> Option<(Timestamp, String)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn failed(&self, since: Timestamp, call: &str) {
        let mut o = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let since = o.as_ref().map_or(since, |(s, _)| *s);
        *o = Some((since, call.to_string()));
    }

    fn answered(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The endpoints of one chain.
#[derive(Debug)]
pub struct Pool {
    chain: String,
    endpoints: Vec<Ep>,
    active: usize,
    timeout: Duration,
    metrics: Option<EvmMetrics>,
    outage: Arc<Outage>,
}

impl Pool {
    /// A pool over `endpoints` (in order of preference), at most
    /// `rate_limit` requests a second to each.
    pub fn new(
        chain: &str,
        endpoints: &[Endpoint],
        rate_limit: u32,
        timeout: Duration,
        metrics: Option<EvmMetrics>,
    ) -> Result<Pool, EvmError> {
        if endpoints.is_empty() {
            return Err(EvmError::Config(format!("chain {chain} has no endpoint")));
        }
        let mut eps = Vec::new();
        for e in endpoints {
            let url = e.url.parse().map_err(|err| {
                EvmError::Config(format!("endpoint {} of {chain}: not a URL: {err}", e.name))
            })?;
            eps.push(Ep {
                name: e.name.clone(),
                url: e.url.clone(),
                provider: RootProvider::new_http(url),
                bucket: Bucket::new(rate_limit),
            });
            if let Some(m) = &metrics {
                m.requests.with_label_values(&[chain, &e.name]);
                m.errors.with_label_values(&[chain, &e.name]);
            }
        }
        Ok(Pool {
            chain: chain.to_string(),
            endpoints: eps,
            active: 0,
            timeout,
            metrics,
            outage: Arc::default(),
        })
    }

    /// The pool's outage state, to share.
    pub fn outage(&self) -> Arc<Outage> {
        self.outage.clone()
    }

    /// The metrics the pool and its watcher keep, if any.
    pub(crate) fn metrics(&self) -> Option<&EvmMetrics> {
        self.metrics.as_ref()
    }

    /// The endpoint calls go to now.
    pub fn active(&self) -> &str {
        &self.endpoints[self.active].name
    }

    /// Calls `f` on the active endpoint, failing over round the list; the
    /// last error of each endpoint when all fail.
    pub async fn call<T, E, F, Fut>(&mut self, what: &str, f: F) -> Result<T, EvmError>
    where
        F: Fn(RootProvider) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let n = self.endpoints.len();
        let round = Timestamp::now();
        let mut errors = Vec::new();
        for step in 0..n {
            let i = (self.active + step) % n;
            let ep = &mut self.endpoints[i];
            let wait = ep.bucket.take();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let labels = [self.chain.as_str(), ep.name.as_str()];
            if let Some(m) = &self.metrics {
                m.requests.with_label_values(&labels).inc();
            }
            let started = Instant::now();
            let result = tokio::time::timeout(self.timeout, f(ep.provider.clone())).await;
            if let Some(m) = &self.metrics {
                m.latency
                    .with_label_values(&labels)
                    .observe(started.elapsed().as_secs_f64());
            }
            let err = match result {
                Ok(Ok(v)) => {
                    self.outage.answered();
                    if i != self.active {
                        tracing::warn!(message = "RPC failed over", chain = %self.chain, from = %self.endpoints[self.active].name, to = %self.endpoints[i].name);
                        self.active = i;
                    }
                    return Ok(v);
                }
                Ok(Err(e)) => without_url(&e.to_string(), &ep.url),
                Err(_) => format!("timed out after {:?}", self.timeout),
            };
            if let Some(m) = &self.metrics {
                m.errors.with_label_values(&labels).inc();
            }
            errors.push(format!("{}: {err}", self.endpoints[i].name));
        }
        self.outage.failed(round, what);
        Err(EvmError::AllEndpointsFailed {
            chain: self.chain.clone(),
            what: what.to_string(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_failed_requests_error_names_the_endpoint_and_never_its_url() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Nothing listens on port 1: the request fails to connect.
        let endpoints = [Endpoint {
            name: "primary".to_string(),
            url: "http://127.0.0.1:1/v2/SECRET-API-KEY".to_string(),
            ws: None,
        }];
        let mut pool =
            Pool::new("ethereum", &endpoints, 100, Duration::from_secs(5), None).unwrap();
        let err = rt
            .block_on(pool.call("eth_blockNumber", |p| async move {
                alloy::providers::Provider::get_block_number(&p).await
            }))
            .unwrap_err()
            .to_string();
        assert!(err.contains("primary"), "{err}");
        assert!(!err.contains("SECRET-API-KEY"), "{err}");
        assert!(!format!("{pool:?}").contains("SECRET-API-KEY"));
    }

    #[test]
    fn a_url_in_an_error_text_is_taken_out() {
        let url = "https://eth.example/v2/KEY";
        assert_eq!(
            without_url(
                "error sending request for url (https://eth.example/v2/KEY): refused",
                url
            ),
            "error sending request: refused"
        );
        assert_eq!(
            without_url("bad gateway at https://eth.example/v2/KEY/ (twice)", url),
            "bad gateway at <endpoint url>/ (twice)"
        );
        assert_eq!(
            without_url("for url (http://a/(b)) x", "http://a/(b)"),
            "for url (<endpoint url>) x"
        );
        assert_eq!(without_url("x for url (http://a/(b)) y", ""), "x y");
    }

    #[test]
    fn the_bucket_allows_a_seconds_burst_then_keeps_to_the_rate() {
        let mut b = Bucket::new(10);
        for _ in 0..10 {
            assert_eq!(b.take(), Duration::ZERO);
        }
        // Empty: the next waits about a tenth of a second, the one after
        // about two tenths.
        let w1 = b.take();
        let w2 = b.take();
        assert!(
            w1 > Duration::from_millis(90) && w1 <= Duration::from_millis(100),
            "{w1:?}"
        );
        assert!(
            w2 > Duration::from_millis(190) && w2 <= Duration::from_millis(200),
            "{w2:?}"
        );
    }
}
