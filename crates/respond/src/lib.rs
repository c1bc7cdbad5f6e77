//! Responders: what happens once a finding or a freeze is durable.
//!
//! The caller writes findings and freezes to the store first, together
//! with the outbox actions they call for ([`webhook`] deliveries of the
//! freeze, [`pagerduty`] pages); a [`deliver::Deliverer`] then takes the
//! due actions from the outbox and attempts them until a receiver accepts
//! them. A crash anywhere loses nothing: an action is durable before its
//! first attempt, and a repeat is harmless because every action carries an
//! idempotency key. The [`log`] responder writes one line per finding and
//! freeze.
//!
//! Secrets (the webhook signing secret, the PagerDuty routing key) live
//! only in memory, in [`Secret`]: never in the outbox, the configuration
//! file or a log line.

pub mod deliver;
pub mod log;
pub mod metrics;
pub mod pagerduty;
pub mod webhook;

pub use deliver::{Backoff, Deliverer};
pub use log::LogResponder;
pub use pagerduty::{Pager, PagerConfig};
pub use webhook::WebhookConfig;

use std::{fmt, path::Path};

/// A secret read from the environment or a file. Its `Debug` shows
/// nothing, so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The variable is unset or empty.
    #[error("environment variable {0} is not set or empty")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read the secret file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("the secret file {0} is empty")]
    EmptyFile(String),
}

impl Secret {
    /// Wraps bytes (tests; values read elsewhere).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// Reads a secret from an environment variable.
    pub fn from_env(var: &str) -> Result<Secret, SecretError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().as_bytes().to_vec())),
            _ => Err(SecretError::MissingEnv(var.to_string())),
        }
    }

    /// Reads a secret from a file (surrounding whitespace, such as the
    /// final newline, is not part of it).
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
            path: path.display().to_string(),
            source,
        })?;
        let t = text.trim();
        if t.is_empty() {
            return Err(SecretError::EmptyFile(path.display().to_string()));
        }
        Ok(Secret(t.as_bytes().to_vec()))
    }

    /// The bytes, for signing or sending.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn secrets_come_from_files_without_their_newline() {
        let dir = std::env::temp_dir().join(format!("dg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        std::fs::write(&f, "abc\n").unwrap();
        assert_eq!(Secret::from_file(&f).unwrap().expose(), b"abc");
        std::fs::write(&f, " \n").unwrap();
        assert!(matches!(
            Secret::from_file(&f),
            Err(SecretError::EmptyFile(_))
        ));
        assert!(matches!(
            Secret::from_env("DG_SURELY_UNSET_VARIABLE"),
            Err(SecretError::MissingEnv(_))
        ));
    }
}
