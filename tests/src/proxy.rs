//! A JSON-RPC proxy in front of a node, to break it on purpose: answer
//! HTTP 500 to the next request that calls a given method (a node or load
//! balancer failing one block's receipts), or answer "method not found"
//! for a method every time (a node without `eth_getBlockReceipts`). It
//! counts what went through, per method.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use anyhow::Context;
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

use crate::receivers::{Server, lock};

#[derive(Debug, Default)]
struct Faults {
    /// Method -> how many more requests calling it get HTTP 500.
    fail_next: HashMap<String, usize>,
    /// Methods answered "method not found".
    missing: HashSet<String>,
    /// Method -> calls forwarded.
    forwarded: HashMap<String, usize>,
    /// Requests answered HTTP 500.
    failed: usize,
}

#[derive(Debug)]
struct ProxyState {
    upstream: String,
    agent: ureq::Agent,
    faults: Mutex<Faults>,
}

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct RpcProxy {
    state: Arc<ProxyState>,
    port: u16,
    _server: Server,
}

impl RpcProxy {
    /// A proxy to `upstream` (an HTTP JSON-RPC URL) on a port the OS picks.
    pub fn start(upstream: &str) -> anyhow::Result<RpcProxy> {
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
            faults: Mutex::new(Faults::default()),
        });
        let router = Router::new()
            .route("/", post(forward))
            .with_state(state.clone());
        let server = Server::start(0, router, "rpc-proxy")?;
        Ok(RpcProxy {
            state,
            port: server.addr.port(),
            _server: server,
        })
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next `n` requests (single or batch) that call `method` are
    /// answered HTTP 500 and not forwarded.
    pub fn fail_next(&self, method: &str, n: usize) {
        lock(&self.state.faults)
            .fail_next
            .insert(method.to_string(), n);
    }

    /// From now on `method` is answered JSON-RPC error -32601.
    pub fn remove_method(&self, method: &str) {
        lock(&self.state.faults).missing.insert(method.to_string());
    }

    /// Calls of `method` forwarded to the node so far.
    pub fn forwarded(&self, method: &str) -> usize {
        lock(&self.state.faults)
            .forwarded
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Requests answered HTTP 500 so far.
    pub fn failed(&self) -> usize {
        lock(&self.state.faults).failed
    }
}

fn method_of(call: &Value) -> String {
    call.get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

async fn forward(State(state): State<Arc<ProxyState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let calls: Vec<Value> = match &request {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    // Decide every fault before anything is forwarded.
    let mut answered: Vec<Option<Value>> = Vec::with_capacity(calls.len());
    {
        let mut f = lock(&state.faults);
        let methods: Vec<String> = calls.iter().map(method_of).collect();
        let fail = methods
            .iter()
            .find_map(|m| f.fail_next.get_mut(m).filter(|n| **n > 0).map(|n| *n -= 1));
        if fail.is_some() {
            f.failed += 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
        }
        for (call, m) in calls.iter().zip(&methods) {
            if f.missing.contains(m) {
                answered.push(Some(json!({
                    "jsonrpc": "2.0",
                    "id": call.get("id").cloned().unwrap_or(Value::Null),
                    "error": {"code": -32601, "message": format!("the method {m} does not exist/is not available")},
                })));
            } else {
                *f.forwarded.entry(m.clone()).or_default() += 1;
                answered.push(None);
            }
        }
    }
    let to_forward: Vec<Value> = calls
        .iter()
        .zip(&answered)
        .filter(|(_, a)| a.is_none())
        .map(|(c, _)| c.clone())
        .collect();
    let mut results: Vec<Value> = Vec::new();
    if !to_forward.is_empty() {
        let upstream = state.upstream.clone();
        let agent = state.agent.clone();
        let body = if request.is_array() {
            Value::Array(to_forward)
        } else {
            to_forward[0].clone()
        };
        let sent = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
            let mut resp = agent
                .post(&upstream)
                .header("content-type", "application/json")
                .send(body.to_string())
                .context("forwarding to the node")?;
            let text = resp.body_mut().read_to_string()?;
            serde_json::from_str(&text).with_context(|| format!("node answered {text}"))
        })
        .await;
        match sent {
            Ok(Ok(Value::Array(a))) => results = a,
            Ok(Ok(one)) => results = vec![one],
            Ok(Err(e)) => return (StatusCode::BAD_GATEWAY, format!("{e:#}")).into_response(),
            Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        }
    }
    // Put the node's answers back with the proxy's own, by id.
    let mut by_id: HashMap<String, Value> = results
        .into_iter()
        .map(|r| (r.get("id").map(Value::to_string).unwrap_or_default(), r))
        .collect();
    let mut out = Vec::with_capacity(calls.len());
    for (call, a) in calls.iter().zip(answered) {
        match a {
            Some(a) => out.push(a),
            None => {
                let id = call.get("id").map(Value::to_string).unwrap_or_default();
                if let Some(r) = by_id.remove(&id) {
                    out.push(r);
                }
            }
        }
    }
    let body = if request.is_array() {
        Value::Array(out)
    } else {
        out.into_iter().next().unwrap_or(Value::Null)
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
