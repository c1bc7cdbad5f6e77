//! Local stand-ins for the services drainguard talks to: the exchange's
//! freeze webhook and PagerDuty's Events API v2. Each runs on 127.0.0.1,
//! checks a request the way the real service would, and records what it
//! accepted, so an end-to-end test asserts on effects at the far end rather
//! than on the daemon's own account of what it sent.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// The header carrying the webhook's timestamp and signature.
pub const SIGNATURE_HEADER: &str = "Drainguard-Signature";

/// The header carrying the webhook's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// How far a webhook's timestamp may be from the receiver's clock, unless
/// configured otherwise.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The value of [`SIGNATURE_HEADER`] for a body sent at unix time `t`:
/// `t=<t>,v1=<lowercase hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = new_mac(secret);
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn new_mac(secret: &[u8]) -> Hmac<Sha256> {
    match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC hashes long keys and pads short ones: every length is valid.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Polls `probe` until it yields a value or `timeout` passes: the daemon
/// delivers asynchronously, so tests wait for an effect instead of sleeping.
fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what} not seen within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not hide what was
    // recorded from the assertions of the test that follows.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An axum router served on 127.0.0.1 by a thread that owns a
/// current-thread runtime, until stopped or dropped.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start(port: u16, router: Router, name: &str) -> anyhow::Result<Server> {
        // Bound on the caller's thread so that a taken port fails the caller
        // and the address is known before any request is sent.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("{name}: binding 127.0.0.1:{port}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    tokio::select! {
                        served = axum::serve(listener, router).into_future() => {
                            if let Err(e) = served {
                                eprintln!("{thread_name}: server failed: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection task with it:
                // a stopped receiver closes its sockets at once, as a
                // service that goes down does, and frees its port.
                drop(rt);
            })
            .with_context(|| format!("{name}: spawning the server thread"))?;
        let mut server = Server {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => {
                server.stop();
                Err(e.context(format!("{name}: starting the server")))
            }
            Err(_) => {
                server.stop();
                bail!("{name}: the server thread ended before serving")
            }
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why the webhook receiver turned a request down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// No [`SIGNATURE_HEADER`].
    MissingSignature,
    /// A signature header that is not `t=<digits>,v1=<64 lowercase hex>`.
    MalformedSignature,
    /// No `v1` in the header matches the HMAC of the raw body.
    BadSignature,
    /// A correctly signed timestamp too far from the receiver's clock.
    StaleTimestamp,
    /// A `Content-Type` other than `application/json`.
    UnsupportedContentType,
    /// No [`IDEMPOTENCY_HEADER`].
    MissingIdempotencyKey,
    /// A body that is not JSON with a known `type` and a `freeze.id`.
    MalformedBody,
    /// An idempotency key other than the one the body's type calls for.
    KeyMismatch,
}

impl RejectReason {
    /// The HTTP status the receiver answers with.
    pub fn status(self) -> u16 {
        match self {
            RejectReason::MissingSignature
            | RejectReason::MalformedSignature
            | RejectReason::BadSignature
            | RejectReason::StaleTimestamp => 401,
            RejectReason::UnsupportedContentType => 415,
            RejectReason::MissingIdempotencyKey
            | RejectReason::MalformedBody
            | RejectReason::KeyMismatch => 400,
        }
    }

    /// The `error` field of the JSON answer.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::MissingSignature => "missing_signature",
            RejectReason::MalformedSignature => "malformed_signature",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::StaleTimestamp => "stale_timestamp",
            RejectReason::UnsupportedContentType => "unsupported_content_type",
            RejectReason::MissingIdempotencyKey => "missing_idempotency_key",
            RejectReason::MalformedBody => "malformed_body",
            RejectReason::KeyMismatch => "idempotency_key_mismatch",
        }
    }
}

/// A request the webhook receiver turned down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRejection {
    /// The cause.
    pub reason: RejectReason,
    /// What exactly was wrong, for a failing test's message.
    pub detail: String,
}

impl WebhookRejection {
    fn new(reason: RejectReason, detail: impl Into<String>) -> WebhookRejection {
        WebhookRejection {
            reason,
            detail: detail.into(),
        }
    }

    fn response(&self) -> Response {
        let status =
            StatusCode::from_u16(self.reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": self.reason.code(), "message": self.detail});
        (status, Json(body)).into_response()
    }
}

/// A delivery the webhook receiver accepted (answered 200).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    /// The `Idempotency-Key`.
    pub key: String,
    /// The parsed body.
    pub body: Value,
    /// Whether this delivery applied its key; false for a duplicate.
    pub applied: bool,
    /// When it arrived (verified), for latency measurements.
    pub received: Instant,
}

/// How to start a [`WebhookReceiver`].
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    secret: Vec<u8>,
    port: u16,
    tolerance: Duration,
}

impl WebhookOptions {
    /// Verifying with `secret`, on a port the OS picks, with
    /// [`DEFAULT_TOLERANCE`].
    pub fn new(secret: &[u8]) -> WebhookOptions {
        WebhookOptions {
            secret: secret.to_vec(),
            port: 0,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// Listen on this port (0: any free one).
    pub fn port(mut self, port: u16) -> WebhookOptions {
        self.port = port;
        self
    }

    /// Accept timestamps at most this far from the receiver's clock.
    pub fn tolerance(mut self, tolerance: Duration) -> WebhookOptions {
        self.tolerance = tolerance;
        self
    }
}

#[derive(Debug)]
struct WebhookState {
    secret: Vec<u8>,
    tolerance: Duration,
    log: Mutex<WebhookLog>,
}

#[derive(Debug, Default)]
struct WebhookLog {
    failing: Option<u16>,
    accepted: Vec<WebhookDelivery>,
    applied: Vec<String>,
    applied_set: HashSet<String>,
    rejected: Vec<WebhookRejection>,
    failed: usize,
}

/// The exchange's freeze endpoint, `POST /freeze`: verifies the signature,
/// the timestamp window and the idempotency key, and applies each key once.
#[derive(Debug)]
pub struct WebhookReceiver {
    state: Arc<WebhookState>,
    port: u16,
    server: Option<Server>,
}

impl WebhookReceiver {
    /// Starts a receiver verifying with `secret` on a port the OS picks.
    pub fn start(secret: &[u8]) -> anyhow::Result<WebhookReceiver> {
        WebhookReceiver::start_with(WebhookOptions::new(secret))
    }

    /// Starts a receiver with these options.
    pub fn start_with(options: WebhookOptions) -> anyhow::Result<WebhookReceiver> {
        let state = Arc::new(WebhookState {
            secret: options.secret,
            tolerance: options.tolerance,
            log: Mutex::new(WebhookLog::default()),
        });
        let server = WebhookReceiver::serve(&state, options.port)?;
        Ok(WebhookReceiver {
            state,
            port: server.addr.port(),
            server: Some(server),
        })
    }

    fn serve(state: &Arc<WebhookState>, port: u16) -> anyhow::Result<Server> {
        let router = Router::new()
            .route("/freeze", post(freeze_endpoint))
            .with_state(state.clone());
        Server::start(port, router, "webhook-receiver")
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The freeze endpoint's URL, `<url>/freeze`.
    pub fn freeze_url(&self) -> String {
        format!("{}/freeze", self.url())
    }

    /// The port it listens on (and listens on again after
    /// [`WebhookReceiver::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers every request with `status` (503, 500, ...) without
    /// checking or applying it, until called with `None`.
    pub fn set_failing(&self, status: Option<u16>) {
        lock(&self.state.log).failing = status;
    }

    /// Stops serving: connections are refused until
    /// [`WebhookReceiver::restart`]. What was recorded stays.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }

    /// Serves again on the same port, with the keys already applied still
    /// known, as an exchange that comes back from an outage remembers them.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.server = Some(WebhookReceiver::serve(&self.state, self.port)?);
        Ok(())
    }

    /// Whether it is serving.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Every accepted delivery in order, duplicates included.
    pub fn accepted(&self) -> Vec<WebhookDelivery> {
        lock(&self.state.log).accepted.clone()
    }

    /// The distinct keys applied, in first-seen order.
    pub fn applied_keys(&self) -> Vec<String> {
        lock(&self.state.log).applied.clone()
    }

    /// Every rejected request in order.
    pub fn rejected(&self) -> Vec<WebhookRejection> {
        lock(&self.state.log).rejected.clone()
    }

    /// How many requests were answered by the failing mode.
    pub fn failed_requests(&self) -> usize {
        lock(&self.state.log).failed
    }

    /// Waits until at least `n` keys have been applied; returns them all.
    pub fn wait_for_applied(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
        wait_for(timeout, &format!("{n} applied freeze keys"), || {
            let keys = self.applied_keys();
            (keys.len() >= n).then_some(keys)
        })
    }
}

async fn freeze_endpoint(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.handle(&headers, &body, unix_now())
}

impl WebhookState {
    fn handle(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Response {
        // One lock for check and apply: two concurrent deliveries of a key
        // must not both apply it.
        let mut log = lock(&self.log);
        if let Some(status) = log.failing {
            log.failed += 1;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (status, Json(json!({"error": "unavailable"}))).into_response();
        }
        match self.verify(headers, body, now) {
            Err(rejection) => {
                let response = rejection.response();
                log.rejected.push(rejection);
                response
            }
            Ok((key, body)) => {
                let applied = log.applied_set.insert(key.clone());
                if applied {
                    log.applied.push(key.clone());
                }
                log.accepted.push(WebhookDelivery {
                    key: key.clone(),
                    body,
                    applied,
                    received: Instant::now(),
                });
                let status = if applied { "applied" } else { "duplicate" };
                (StatusCode::OK, Json(json!({"status": status, "key": key}))).into_response()
            }
        }
    }

    /// The checks an exchange makes, authentication first: nothing about
    /// an unauthenticated request is worth parsing.
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(String, Value), WebhookRejection> {
        use RejectReason as R;
        let header = headers
            .get(SIGNATURE_HEADER)
            .ok_or_else(|| WebhookRejection::new(R::MissingSignature, "no signature header"))?
            .to_str()
            .map_err(|_| WebhookRejection::new(R::MalformedSignature, "not ASCII"))?;
        let signature = parse_signature(header)
            .map_err(|detail| WebhookRejection::new(R::MalformedSignature, detail))?;
        let matches = signature.v1.iter().any(|expected| {
            let mut mac = new_mac(&self.secret);
            // The timestamp as sent, not as reformatted: the sender signed
            // these exact bytes.
            mac.update(signature.t_raw.as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(expected).is_ok()
        });
        if !matches {
            return Err(WebhookRejection::new(
                R::BadSignature,
                "no v1 signature matches the body",
            ));
        }
        let skew = now.abs_diff(signature.t);
        if skew > self.tolerance.as_secs() {
            return Err(WebhookRejection::new(
                R::StaleTimestamp,
                format!(
                    "timestamp {} is {skew} s from the receiver's clock (tolerance {} s)",
                    signature.t,
                    self.tolerance.as_secs()
                ),
            ));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(WebhookRejection::new(
                R::UnsupportedContentType,
                format!("content type {content_type:?}"),
            ));
        }
        let key = headers
            .get(IDEMPOTENCY_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| WebhookRejection::new(R::MissingIdempotencyKey, "no idempotency key"))?
            .to_string();
        let parsed: Value = serde_json::from_slice(body)
            .map_err(|e| WebhookRejection::new(R::MalformedBody, format!("not JSON: {e}")))?;
        let kind = parsed
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| WebhookRejection::new(R::MalformedBody, "no string `type`"))?;
        let id = parsed
            .get("freeze")
            .and_then(|f| f.get("id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| WebhookRejection::new(R::MalformedBody, "no string `freeze.id`"))?;
        let expected = match kind {
            "freeze.raised" => id.to_string(),
            "freeze.lifted" => format!("lift:{id}"),
            other => {
                return Err(WebhookRejection::new(
                    R::MalformedBody,
                    format!("unknown type {other:?}"),
                ));
            }
        };
        if key != expected {
            return Err(WebhookRejection::new(
                R::KeyMismatch,
                format!("key {key:?} for a {kind} of {id:?}, expected {expected:?}"),
            ));
        }
        Ok((key, parsed))
    }
}

#[derive(Debug)]
struct ParsedSignature<'a> {
    t_raw: &'a str,
    t: i64,
    v1: Vec<[u8; 32]>,
}

/// Parses `t=<digits>,v1=<hex>[,v1=<hex>...]`. Several `v1` let a sender
/// sign with an old and a new secret while they rotate; other schemes are
/// ignored so that adding one does not break receivers.
fn parse_signature(header: &str) -> Result<ParsedSignature<'_>, String> {
    let mut t = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("item {item:?} is not name=value"))?;
        match name {
            "t" => {
                if t.is_some() {
                    return Err("more than one t".into());
                }
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("t={value:?} is not unix seconds"));
                }
                let secs: i64 = value
                    .parse()
                    .map_err(|_| format!("t={value:?} is out of range"))?;
                t = Some((value, secs));
            }
            "v1" => {
                let is_lower_hex = value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                let mut mac = [0u8; 32];
                if !is_lower_hex || hex::decode_to_slice(value, &mut mac).is_err() {
                    return Err(format!("v1={value:?} is not 64 lowercase hex digits"));
                }
                v1.push(mac);
            }
            _ => {}
        }
    }
    let (t_raw, t) = t.ok_or("no t")?;
    if v1.is_empty() {
        return Err("no v1".into());
    }
    Ok(ParsedSignature { t_raw, t, v1 })
}

/// The severities PagerDuty's Events API v2 accepts.
pub const PAGERDUTY_SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

/// An event the PagerDuty receiver answered 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagerDutyRejection {
    /// The `errors` of the answer, one per problem found.
    pub errors: Vec<String>,
    /// The request body, as text.
    pub body: String,
}

#[derive(Debug)]
struct PagerDutyState {
    routing_key: String,
    log: Mutex<PagerDutyLog>,
}

#[derive(Debug, Default)]
struct PagerDutyLog {
    rate_limit_next: usize,
    rate_limited: usize,
    /// Each accepted event with the dedup key it was given or assigned.
    accepted: Vec<(Value, String)>,
    rejected: Vec<PagerDutyRejection>,
    generated: u64,
}

/// PagerDuty's Events API v2, `POST /v2/enqueue`: validates each event as
/// the documentation states, for one routing key.
#[derive(Debug)]
pub struct PagerDutyReceiver {
    state: Arc<PagerDutyState>,
    server: Server,
}

impl PagerDutyReceiver {
    /// Starts a receiver for `routing_key` (32 characters, as PagerDuty's
    /// integration keys are) on a port the OS picks.
    pub fn start(routing_key: &str) -> anyhow::Result<PagerDutyReceiver> {
        PagerDutyReceiver::start_on(routing_key, 0)
    }

    /// Starts a receiver for `routing_key` on this port (0: any free one).
    pub fn start_on(routing_key: &str, port: u16) -> anyhow::Result<PagerDutyReceiver> {
        if routing_key.chars().count() != 32 {
            bail!("a PagerDuty routing key has 32 characters, not {routing_key:?}");
        }
        let state = Arc::new(PagerDutyState {
            routing_key: routing_key.to_string(),
            log: Mutex::new(PagerDutyLog::default()),
        });
        let router = Router::new()
            .route("/v2/enqueue", post(enqueue_endpoint))
            .with_state(state.clone());
        let server = Server::start(port, router, "pagerduty-receiver")?;
        Ok(PagerDutyReceiver { state, server })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The events endpoint's URL, `<url>/v2/enqueue`.
    pub fn enqueue_url(&self) -> String {
        format!("{}/v2/enqueue", self.url())
    }

    /// The routing key it accepts.
    pub fn routing_key(&self) -> &str {
        &self.state.routing_key
    }

    /// Answers the next `n` requests 429, as PagerDuty does to a sender
    /// over its rate limit; they are neither checked nor recorded.
    pub fn rate_limit_next(&self, n: usize) {
        lock(&self.state.log).rate_limit_next = n;
    }

    /// How many requests were answered 429.
    pub fn rate_limited(&self) -> usize {
        lock(&self.state.log).rate_limited
    }

    /// Every accepted event in order, as sent.
    pub fn accepted(&self) -> Vec<Value> {
        lock(&self.state.log)
            .accepted
            .iter()
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Every rejected event in order.
    pub fn rejected(&self) -> Vec<PagerDutyRejection> {
        lock(&self.state.log).rejected.clone()
    }

    /// The distinct dedup keys of accepted triggers, sent or assigned, in
    /// first-seen order.
    pub fn dedup_keys(&self) -> Vec<String> {
        let log = lock(&self.state.log);
        let mut seen = HashSet::new();
        log.accepted
            .iter()
            .filter(|(e, _)| action_of(e) == Some("trigger"))
            .filter(|(_, k)| seen.insert(k.as_str()))
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Accepted `trigger` events in order.
    pub fn triggers(&self) -> Vec<Value> {
        self.with_action("trigger")
    }

    /// Accepted `acknowledge` events in order.
    pub fn acknowledges(&self) -> Vec<Value> {
        self.with_action("acknowledge")
    }

    /// Accepted `resolve` events in order.
    pub fn resolves(&self) -> Vec<Value> {
        self.with_action("resolve")
    }

    fn with_action(&self, action: &str) -> Vec<Value> {
        lock(&self.state.log)
            .accepted
            .iter()
            .filter(|(e, _)| action_of(e) == Some(action))
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Waits until at least `n` events have been accepted; returns them all.
    pub fn wait_for_accepted(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        wait_for(timeout, &format!("{n} accepted PagerDuty events"), || {
            let events = self.accepted();
            (events.len() >= n).then_some(events)
        })
    }
}

fn action_of(event: &Value) -> Option<&str> {
    event.get("event_action").and_then(Value::as_str)
}

async fn enqueue_endpoint(State(state): State<Arc<PagerDutyState>>, body: Bytes) -> Response {
    state.handle(&body)
}

impl PagerDutyState {
    fn handle(&self, body: &[u8]) -> Response {
        let mut log = lock(&self.log);
        if log.rate_limit_next > 0 {
            log.rate_limit_next -= 1;
            log.rate_limited += 1;
            let answer = json!({
                "status": "throttle event",
                "message": "Requests for this integration are arriving too quickly. Please retry later.",
            });
            return (StatusCode::TOO_MANY_REQUESTS, Json(answer)).into_response();
        }
        match validate_event(body, &self.routing_key) {
            Err(errors) => {
                let answer = json!({
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": errors,
                });
                log.rejected.push(PagerDutyRejection {
                    errors,
                    body: String::from_utf8_lossy(body).into_owned(),
                });
                (StatusCode::BAD_REQUEST, Json(answer)).into_response()
            }
            Ok((event, dedup_key)) => {
                let dedup_key = dedup_key.unwrap_or_else(|| {
                    // PagerDuty assigns a UUID; 32 hex digits unique to this
                    // process and receiver serve the same purpose.
                    log.generated += 1;
                    format!(
                        "{:016x}{:08x}{:08x}",
                        unix_now(),
                        std::process::id(),
                        log.generated
                    )
                });
                log.accepted.push((event, dedup_key.clone()));
                let answer = json!({
                    "status": "success",
                    "message": "Event processed",
                    "dedup_key": dedup_key,
                });
                (StatusCode::ACCEPTED, Json(answer)).into_response()
            }
        }
    }
}

/// Checks an Events API v2 body as the documentation states. Returns the
/// event and its dedup key if it has one, or every problem found.
fn validate_event(body: &[u8], routing_key: &str) -> Result<(Value, Option<String>), Vec<String>> {
    let event: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("Body is not valid JSON: {e}")]),
    };
    let Some(fields) = event.as_object() else {
        return Err(vec!["Event must be a JSON object".into()]);
    };
    let mut errors = Vec::new();

    match nonblank(fields, "routing_key", &mut errors) {
        Some(key) if key.chars().count() != 32 => {
            errors.push("Length of 'routing_key' is incorrect (should be 32 characters)".into());
        }
        Some(key) if key != routing_key => {
            errors.push("'routing_key' matches no integration on this service".into());
        }
        _ => {}
    }

    let action = nonblank(fields, "event_action", &mut errors);
    if let Some(a) = action
        && !matches!(a, "trigger" | "acknowledge" | "resolve")
    {
        errors.push(
            "'event_action' is invalid (must be one of the following: 'trigger', \
             'acknowledge' or 'resolve')"
                .into(),
        );
    }

    let dedup_key = match fields.get("dedup_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if k.trim().is_empty() => None,
        Some(Value::String(k)) => {
            if k.chars().count() > 255 {
                errors.push("Length of 'dedup_key' is too long (max 255 characters)".into());
            }
            Some(k.clone())
        }
        Some(_) => {
            errors.push("'dedup_key' must be a string".into());
            None
        }
    };
    if dedup_key.is_none() && matches!(action, Some("acknowledge" | "resolve")) {
        errors.push("'dedup_key' is missing or blank (required to acknowledge or resolve)".into());
    }

    // Only a trigger describes an alert; PagerDuty ignores the payload of an
    // acknowledge or resolve.
    if action == Some("trigger") {
        match fields.get("payload") {
            Some(Value::Object(payload)) => validate_payload(payload, &mut errors),
            _ => errors.push("'payload' is missing or not an object".into()),
        }
    }

    validate_list(fields, "links", "href", &["text"], &mut errors);
    validate_list(fields, "images", "src", &["href", "alt"], &mut errors);
    for name in ["client", "client_url"] {
        optional_string(fields, name, name, &mut errors);
    }

    if errors.is_empty() {
        Ok((event, dedup_key))
    } else {
        Err(errors)
    }
}

fn validate_payload(payload: &Map<String, Value>, errors: &mut Vec<String>) {
    let mut nested = Vec::new();
    if let Some(summary) = nonblank(payload, "summary", &mut nested)
        && summary.chars().count() > 1024
    {
        nested.push("Length of 'summary' is too long (max 1024 characters)".into());
    }
    nonblank(payload, "source", &mut nested);
    if let Some(severity) = nonblank(payload, "severity", &mut nested)
        && !PAGERDUTY_SEVERITIES.contains(&severity)
    {
        nested.push(
            "'severity' is invalid (must be one of the following: 'critical', 'warning', \
             'error' or 'info')"
                .into(),
        );
    }
    match payload.get("timestamp") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if parse_timestamp(t) => {}
        Some(_) => nested.push("'timestamp' is not an ISO 8601 date-time".into()),
    }
    for name in ["component", "group", "class"] {
        optional_string(payload, name, name, &mut nested);
    }
    match payload.get("custom_details") {
        None | Some(Value::Null | Value::Object(_)) => {}
        Some(_) => nested.push("'custom_details' must be an object".into()),
    }
    errors.extend(nested.into_iter().map(|e| format!("payload: {e}")));
}

/// ISO 8601 as PagerDuty takes it: RFC 3339, or its own example's form with
/// a colon-less offset (`2015-07-17T08:42:58.315+0000`).
fn parse_timestamp(t: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(t).is_ok()
        || chrono::DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%z").is_ok()
}

/// The field as a string if present, non-blank and a string; records why
/// not otherwise.
fn nonblank<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    errors: &mut Vec<String>,
) -> Option<&'a str> {
    match fields.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(Value::String(_) | Value::Null) | None => {
            errors.push(format!("'{name}' is missing or blank"));
            None
        }
        Some(_) => {
            errors.push(format!("'{name}' must be a string"));
            None
        }
    }
}

fn optional_string(fields: &Map<String, Value>, name: &str, label: &str, errors: &mut Vec<String>) {
    if let Some(v) = fields.get(name)
        && !(v.is_string() || v.is_null())
    {
        errors.push(format!("'{label}' must be a string"));
    }
}

/// `links` and `images`: an optional array of objects, each with a required
/// string field and optional string ones.
fn validate_list(
    fields: &Map<String, Value>,
    name: &str,
    required: &str,
    optional: &[&str],
    errors: &mut Vec<String>,
) {
    let items = match fields.get(name) {
        None | Some(Value::Null) => return,
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(format!("'{name}' must be an array"));
            return;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let Some(item) = item.as_object() else {
            errors.push(format!("'{name}[{i}]' must be an object"));
            continue;
        };
        match item.get(required) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => errors.push(format!("'{name}[{i}].{required}' is missing or blank")),
        }
        for field in optional {
            optional_string(item, field, &format!("{name}[{i}].{field}"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-test-secret";
    const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// POSTs `body` with these headers: status and JSON answer.
    fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let mut req = agent().post(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn freeze_body(kind: &str, id: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": kind,
            "freeze": {
                "id": id,
                "scope": "wallet:ethereum:0x00000000000000000000000000000000000000aa",
                "reason": "outflow matches no withdrawal intent",
                "rule": "unmatched-outflow",
                "severity": "critical",
                "findings": [{"id": "fd-1", "tx": "0xabc"}],
            },
            "recommended_actions": ["suspend withdrawals for the scope"],
        }))
        .unwrap()
    }

    /// Sends `body` to the freeze endpoint, signed over `signed` at `t`.
    fn deliver_signed(
        rx: &WebhookReceiver,
        t: i64,
        key: &str,
        signed: &[u8],
        body: &[u8],
    ) -> (u16, Value) {
        let signature = sign(SECRET, t, signed);
        post(
            &rx.freeze_url(),
            &[
                ("Content-Type", "application/json"),
                (IDEMPOTENCY_HEADER, key),
                (SIGNATURE_HEADER, &signature),
            ],
            body,
        )
    }

    fn deliver(rx: &WebhookReceiver, key: &str, body: &[u8]) -> (u16, Value) {
        deliver_signed(rx, unix_now(), key, body, body)
    }

    fn reasons(rx: &WebhookReceiver) -> Vec<RejectReason> {
        rx.rejected().iter().map(|r| r.reason).collect()
    }

    #[test]
    fn sign_matches_an_independent_hmac() {
        // From `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret`.
        assert_eq!(
            sign(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn signed_delivery_is_applied_once_and_a_repeat_is_a_duplicate() {
        let rx = WebhookReceiver::start(SECRET).unwrap();
        assert!(rx.url().starts_with("http://127.0.0.1:"));
        let raised = freeze_body("freeze.raised", "fz-1");

        let (status, answer) = deliver(&rx, "fz-1", &raised);
        assert_eq!((status, answer["status"].as_str()), (200, Some("applied")));
        let (status, answer) = deliver(&rx, "fz-1", &raised);
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("duplicate"))
        );
        let lifted = freeze_body("freeze.lifted", "fz-1");
        let (status, answer) = deliver(&rx, "lift:fz-1", &lifted);
        assert_eq!((status, answer["status"].as_str()), (200, Some("applied")));

        assert_eq!(rx.applied_keys(), ["fz-1", "lift:fz-1"]);
        let accepted = rx.accepted();
        assert_eq!(accepted.len(), 3);
        assert_eq!(
            accepted.iter().map(|d| d.applied).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_eq!(
            accepted[0].body,
            serde_json::from_slice::<Value>(&raised).unwrap()
        );
        assert_eq!(accepted[2].body["type"], "freeze.lifted");
        assert!(rx.rejected().is_empty());
        assert_eq!(rx.wait_for_applied(2, Duration::ZERO).unwrap().len(), 2);
        assert!(rx.wait_for_applied(3, Duration::from_millis(50)).is_err());
    }

    #[test]
    fn a_tampered_body_is_rejected_with_401() {
        let rx = WebhookReceiver::start(SECRET).unwrap();
        let signed = freeze_body("freeze.raised", "fz-1");
        let sent = freeze_body("freeze.raised", "fz-2");
        let (status, answer) = deliver_signed(&rx, unix_now(), "fz-2", &signed, &sent);
        assert_eq!(status, 401);
        assert_eq!(answer["error"], "bad_signature");

        // The same bytes reformatted are different bytes.
        let value: Value = serde_json::from_slice(&signed).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        let (status, _) = deliver_signed(&rx, unix_now(), "fz-1", &signed, &pretty);
        assert_eq!(status, 401);

        let other = WebhookReceiver::start(b"another secret").unwrap();
        let (status, answer) = deliver(&other, "fz-1", &signed);
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("bad_signature"))
        );

        assert_eq!(reasons(&rx), [RejectReason::BadSignature; 2]);
        assert!(rx.accepted().is_empty() && rx.applied_keys().is_empty());
    }

    #[test]
    fn a_timestamp_outside_the_window_is_rejected() {
        let rx = WebhookReceiver::start(SECRET).unwrap();
        let body = freeze_body("freeze.raised", "fz-1");
        let now = unix_now();
        let (status, answer) = deliver_signed(&rx, now - 301, "fz-1", &body, &body);
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("stale_timestamp"))
        );
        let (status, _) = deliver_signed(&rx, now + 301, "fz-1", &body, &body);
        assert_eq!(status, 401);
        assert_eq!(reasons(&rx), [RejectReason::StaleTimestamp; 2]);
        assert!(rx.applied_keys().is_empty());
        // Inside the window, with a few seconds' margin for a slow test.
        let (status, _) = deliver_signed(&rx, now - 290, "fz-1", &body, &body);
        assert_eq!(status, 200);
        assert_eq!(rx.applied_keys(), ["fz-1"]);

        let strict = WebhookReceiver::start_with(
            WebhookOptions::new(SECRET).tolerance(Duration::from_secs(10)),
        )
        .unwrap();
        let (status, _) = deliver_signed(&strict, unix_now() - 60, "fz-1", &body, &body);
        assert_eq!(status, 401);
        assert_eq!(reasons(&strict), [RejectReason::StaleTimestamp]);
    }

    #[test]
    fn a_missing_or_malformed_signature_is_rejected() {
        let rx = WebhookReceiver::start(SECRET).unwrap();
        let body = freeze_body("freeze.raised", "fz-1");
        let (status, answer) = post(
            &rx.freeze_url(),
            &[
                ("Content-Type", "application/json"),
                (IDEMPOTENCY_HEADER, "fz-1"),
            ],
            &body,
        );
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("missing_signature"))
        );

        let good = sign(SECRET, unix_now(), &body);
        let v1 = good.split_once(",v1=").unwrap().1.to_string();
        let t = unix_now();
        for header in [
            format!("v1={v1}"),
            format!("t={t}"),
            format!("t={t},v1={}", v1.to_uppercase()),
            format!("t={t},v1={}", &v1[..62]),
            format!("t=-{t},v1={v1}"),
            format!("t={t};v1={v1}"),
        ] {
            let (status, answer) = post(
                &rx.freeze_url(),
                &[
                    ("Content-Type", "application/json"),
                    (IDEMPOTENCY_HEADER, "fz-1"),
                    (SIGNATURE_HEADER, &header),
                ],
                &body,
            );
            assert_eq!(
                (status, answer["error"].as_str()),
                (401, Some("malformed_signature")),
                "{header}"
            );
        }
        assert_eq!(rx.rejected().len(), 7);
        assert!(rx.accepted().is_empty());

        // Order does not matter, and an unknown scheme beside v1 is ignored.
        let reordered = format!("v0=zz,v1={v1},t={}", good[2..].split_once(',').unwrap().0);
        let (status, _) = post(
            &rx.freeze_url(),
            &[
                ("Content-Type", "application/json"),
                (IDEMPOTENCY_HEADER, "fz-1"),
                (SIGNATURE_HEADER, &reordered),
            ],
            &body,
        );
        assert_eq!(status, 200);
    }

    #[test]
    fn a_bad_key_body_or_content_type_is_rejected_after_the_signature() {
        let rx = WebhookReceiver::start(SECRET).unwrap();
        let raised = freeze_body("freeze.raised", "fz-1");
        let lifted = freeze_body("freeze.lifted", "fz-1");
        let cases: [(&str, &[u8], u16, &str); 6] = [
            ("fz-2", &raised, 400, "idempotency_key_mismatch"),
            ("lift:fz-1", &raised, 400, "idempotency_key_mismatch"),
            ("fz-1", &lifted, 400, "idempotency_key_mismatch"),
            ("fz-1", b"{not json", 400, "malformed_body"),
            (
                "fz-1",
                br#"{"type":"freeze.raised","freeze":{}}"#,
                400,
                "malformed_body",
            ),
            (
                "fz-1",
                br#"{"type":"freeze.moved","freeze":{"id":"fz-1"}}"#,
                400,
                "malformed_body",
            ),
        ];
        for (key, body, want_status, want_error) in cases {
            let (status, answer) = deliver(&rx, key, body);
            assert_eq!(
                (status, answer["error"].as_str()),
                (want_status, Some(want_error))
            );
        }

        let signature = sign(SECRET, unix_now(), &raised);
        let (status, answer) = post(
            &rx.freeze_url(),
            &[
                ("Content-Type", "application/json"),
                (SIGNATURE_HEADER, &signature),
            ],
            &raised,
        );
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("missing_idempotency_key"))
        );
        let (status, answer) = post(
            &rx.freeze_url(),
            &[
                ("Content-Type", "text/plain"),
                (IDEMPOTENCY_HEADER, "fz-1"),
                (SIGNATURE_HEADER, &signature),
            ],
            &raised,
        );
        assert_eq!(
            (status, answer["error"].as_str()),
            (415, Some("unsupported_content_type"))
        );

        assert_eq!(rx.rejected().len(), 8);
        assert!(rx.applied_keys().is_empty());
    }

    #[test]
    fn failing_mode_answers_503_and_applies_nothing() {
        let rx = WebhookReceiver::start(SECRET).unwrap();
        let body = freeze_body("freeze.raised", "fz-1");
        rx.set_failing(Some(503));
        assert_eq!(deliver(&rx, "fz-1", &body).0, 503);
        assert_eq!(deliver(&rx, "fz-1", &body).0, 503);
        rx.set_failing(Some(500));
        assert_eq!(deliver(&rx, "fz-1", &body).0, 500);
        assert_eq!(rx.failed_requests(), 3);
        assert!(rx.accepted().is_empty() && rx.applied_keys().is_empty());
        assert!(rx.rejected().is_empty());

        rx.set_failing(None);
        let (status, answer) = deliver(&rx, "fz-1", &body);
        assert_eq!((status, answer["status"].as_str()), (200, Some("applied")));
        assert_eq!(rx.applied_keys(), ["fz-1"]);
        assert_eq!(rx.failed_requests(), 3);
    }

    #[test]
    fn a_receiver_stops_and_starts_again_on_the_same_port() {
        let body = freeze_body("freeze.raised", "fz-1");
        let mut rx = WebhookReceiver::start(SECRET).unwrap();
        let port = rx.port();
        assert_eq!(deliver(&rx, "fz-1", &body).0, 200);

        // Stopped, it refuses connections; restarted, it remembers the key.
        rx.stop();
        assert!(!rx.is_running());
        let signature = sign(SECRET, unix_now(), &body);
        let refused = agent()
            .post(&rx.freeze_url())
            .header("Content-Type", "application/json")
            .header(IDEMPOTENCY_HEADER, "fz-1")
            .header(SIGNATURE_HEADER, &signature)
            .send(&body[..]);
        assert!(refused.is_err(), "{refused:?}");
        rx.restart().unwrap();
        assert_eq!(rx.port(), port);
        let (status, answer) = deliver(&rx, "fz-1", &body);
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("duplicate"))
        );
        assert_eq!(rx.applied_keys(), ["fz-1"]);

        // Dropped, its port is free for a new receiver with no memory.
        drop(rx);
        let rx = WebhookReceiver::start_with(WebhookOptions::new(SECRET).port(port)).unwrap();
        assert_eq!(rx.url(), format!("http://127.0.0.1:{port}"));
        let (status, answer) = deliver(&rx, "fz-1", &body);
        assert_eq!((status, answer["status"].as_str()), (200, Some("applied")));
        assert_eq!(rx.accepted().len(), 1);
    }

    fn trigger(dedup_key: Option<&str>) -> Value {
        let mut event = json!({
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "payload": {
                "summary": "FREEZE raised: wallet:ethereum:0xaa (unmatched outflow)",
                "source": "drainguard",
                "severity": "critical",
                "timestamp": "2023-09-12T04:10:00Z",
                "component": "ethereum",
                "group": "hot-wallets",
                "class": "withdrawal freeze",
                "custom_details": {"freeze_id": "fz-1", "findings": 3},
            },
            "links": [{"href": "http://127.0.0.1:9464/v1/freezes/fz-1", "text": "freeze"}],
            "images": [{"src": "https://example.com/graph.png"}],
            "client": "drainguard",
        });
        if let Some(key) = dedup_key {
            event["dedup_key"] = json!(key);
        }
        event
    }

    fn enqueue(rx: &PagerDutyReceiver, event: &Value) -> (u16, Value) {
        post(
            &rx.enqueue_url(),
            &[("Content-Type", "application/json")],
            &serde_json::to_vec(event).unwrap(),
        )
    }

    #[test]
    fn a_valid_trigger_gets_202_with_its_dedup_key() {
        let rx = PagerDutyReceiver::start(ROUTING_KEY).unwrap();
        let (status, answer) = enqueue(&rx, &trigger(Some("fz-1")));
        assert_eq!(status, 202);
        assert_eq!(
            answer,
            json!({"status": "success", "message": "Event processed", "dedup_key": "fz-1"})
        );
        let (status, _) = enqueue(&rx, &trigger(Some("fz-1")));
        assert_eq!(status, 202);

        // Without a key, one is assigned and answered.
        let (status, answer) = enqueue(&rx, &trigger(None));
        assert_eq!(status, 202);
        let assigned = answer["dedup_key"].as_str().unwrap().to_string();
        assert_eq!(assigned.len(), 32);

        // PagerDuty's own example timestamp has a colon-less offset.
        let mut event = trigger(Some("fz-2"));
        event["payload"]["timestamp"] = json!("2015-07-17T08:42:58.315+0000");
        assert_eq!(enqueue(&rx, &event).0, 202);

        let resolve =
            json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "fz-1"});
        assert_eq!(enqueue(&rx, &resolve).0, 202);
        let ack =
            json!({"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "fz-2"});
        assert_eq!(enqueue(&rx, &ack).0, 202);

        assert_eq!(rx.accepted().len(), 6);
        assert_eq!(rx.triggers().len(), 4);
        assert_eq!(rx.resolves(), [resolve]);
        assert_eq!(rx.acknowledges(), [ack]);
        assert_eq!(
            rx.dedup_keys(),
            ["fz-1".to_string(), assigned, "fz-2".into()]
        );
        assert!(rx.rejected().is_empty());
        assert_eq!(rx.wait_for_accepted(6, Duration::ZERO).unwrap().len(), 6);
    }

    #[test]
    fn invalid_events_get_400_and_are_not_accepted() {
        let rx = PagerDutyReceiver::start(ROUTING_KEY).unwrap();
        let mut cases: Vec<(&str, Value)> = Vec::new();
        let mut e = trigger(Some("fz-1"));
        e["routing_key"] = json!(&ROUTING_KEY[..31]);
        cases.push(("routing_key", e));
        let mut e = trigger(Some("fz-1"));
        e["routing_key"] = json!("ffffffffffffffffffffffffffffffff");
        cases.push(("routing_key", e));
        let mut e = trigger(Some("fz-1"));
        e["payload"]["severity"] = json!("fatal");
        cases.push(("severity", e));
        let mut e = trigger(Some("fz-1"));
        e["payload"]["summary"] = json!("x".repeat(1025));
        cases.push(("summary", e));
        let mut e = trigger(Some("fz-1"));
        e["payload"].as_object_mut().unwrap().remove("source");
        cases.push(("source", e));
        let mut e = trigger(Some("fz-1"));
        e["payload"]["timestamp"] = json!("yesterday");
        cases.push(("timestamp", e));
        let mut e = trigger(Some("fz-1"));
        e["dedup_key"] = json!("k".repeat(256));
        cases.push(("dedup_key", e));
        let mut e = trigger(Some("fz-1"));
        e["links"] = json!([{"text": "no href"}]);
        cases.push(("links[0].href", e));
        let mut e = trigger(Some("fz-1"));
        e["images"] = json!([{"href": "https://example.com"}]);
        cases.push(("images[0].src", e));
        let mut e = trigger(Some("fz-1"));
        e.as_object_mut().unwrap().remove("payload");
        cases.push(("payload", e));
        let mut e = trigger(Some("fz-1"));
        e["event_action"] = json!("escalate");
        cases.push(("event_action", e));
        cases.push((
            "dedup_key",
            json!({"routing_key": ROUTING_KEY, "event_action": "resolve"}),
        ));

        for (field, event) in &cases {
            let (status, answer) = enqueue(&rx, event);
            assert_eq!(status, 400, "{field}");
            assert_eq!(answer["status"], "invalid event");
            assert_eq!(answer["message"], "Event object is invalid");
            let errors = answer["errors"].as_array().unwrap();
            assert_eq!(errors.len(), 1, "{field}: {errors:?}");
            assert!(
                errors[0].as_str().unwrap().contains(field),
                "{field}: {errors:?}"
            );
        }
        let (status, _) = post(&rx.enqueue_url(), &[], b"{\"routing_key\":");
        assert_eq!(status, 400);

        assert_eq!(rx.rejected().len(), cases.len() + 1);
        assert!(rx.accepted().is_empty() && rx.dedup_keys().is_empty());

        // The limits are inclusive.
        let mut e = trigger(Some(&"k".repeat(255)));
        e["payload"]["summary"] = json!("x".repeat(1024));
        assert_eq!(enqueue(&rx, &e).0, 202);
    }

    #[test]
    fn rate_limiting_answers_429_then_recovers() {
        let rx = PagerDutyReceiver::start(ROUTING_KEY).unwrap();
        rx.rate_limit_next(1);
        assert_eq!(enqueue(&rx, &trigger(Some("fz-1"))).0, 429);
        assert!(rx.accepted().is_empty());
        assert_eq!(enqueue(&rx, &trigger(Some("fz-1"))).0, 202);
        assert_eq!(rx.rate_limited(), 1);
        assert_eq!(rx.dedup_keys(), ["fz-1"]);
    }

    #[test]
    fn a_pagerduty_receiver_needs_a_32_character_key() {
        assert!(PagerDutyReceiver::start(&ROUTING_KEY[..31]).is_err());
        let rx = PagerDutyReceiver::start(ROUTING_KEY).unwrap();
        assert_eq!(rx.routing_key(), ROUTING_KEY);
        assert!(rx.url().starts_with("http://127.0.0.1:"));
    }
}
