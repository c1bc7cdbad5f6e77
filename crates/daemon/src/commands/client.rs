//! A small client of a running daemon's API, for the operator commands:
//! the admin token from the environment, JSON in and out, and an error
//! that carries the daemon's own message.

use anyhow::{Context, bail};
use serde_json::Value;

use crate::auth::ADMIN_TOKEN_ENV;

/// Where the daemon listens, and how to reach it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    /// The daemon's API.
    #[arg(long, default_value = "http://127.0.0.1:9464", env = "DRAINGUARD_API")]
    api: String,
}

impl Target {
    /// Calls `method path` with an optional JSON body; the parsed answer of
    /// a 2xx, else an error with the daemon's message.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let token = std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .with_context(|| format!("set {ADMIN_TOKEN_ENV} to the daemon's admin token"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.api.trim_end_matches('/'));
        let auth = format!("Bearer {}", token.trim());
        let result = match (method, body) {
            ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
            (_, Some(b)) => agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(serde_json::to_vec(b)?.as_slice()),
            (_, None) => agent.post(&url).header("authorization", &auth).send_empty(),
        };
        let mut resp = result.with_context(|| format!("{method} {url}: is the daemon running?"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .context("reading the answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) {
            let msg = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_string);
            bail!("{method} {path}: HTTP {status}: {msg}");
        }
        Ok(value)
    }
}
