//! Bearer tokens for the HTTP API: read from the environment once at
//! startup, kept in a type that never prints them, compared in constant
//! time.

use std::{fmt, sync::Arc};

/// The environment variable holding the admin token. Unset or empty: the
/// admin API is disabled.
pub(crate) const ADMIN_TOKEN_ENV: &str = "DRAINGUARD_ADMIN_TOKEN";
/// The environment variable holding the withdrawal system's token for
/// `POST /v1/intents` (separate from the admin token).
pub(crate) const INTENTS_TOKEN_ENV: &str = "DRAINGUARD_INTENTS_TOKEN";

/// A secret token. `Debug` prints `[redacted]`; the bytes are wiped (best
/// effort) when the last copy is dropped.
#[derive(Clone)]
pub(crate) struct Token(Arc<Secret>);

struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        // Keeps the wipe from being optimised away as a dead store.
        std::hint::black_box(&mut self.0);
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Token {
    /// The token in an environment variable; `None` when it is unset,
    /// empty or not UTF-8 (the latter is logged, the value never is).
    pub(crate) fn from_env(var: &str) -> Option<Token> {
        match std::env::var(var) {
            Ok(v) if v.trim().is_empty() => None,
            Ok(v) => Some(Token(Arc::new(Secret(v.into_bytes())))),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                tracing::error!(
                    message = "ignoring a token that is not UTF-8",
                    variable = var
                );
                None
            }
        }
    }

    #[cfg(test)]
    fn new(token: &str) -> Token {
        Token(Arc::new(Secret(token.as_bytes().to_vec())))
    }

    /// Whether `presented` is this token, in time that does not depend on
    /// where they differ (only on their lengths).
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.0.0, presented)
    }
}

/// Byte-wise equality that looks at every byte whatever it finds: no
/// early return on the first difference. Lengths may leak.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The outcome of checking a request's `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The right bearer token.
    Granted,
    /// No token is configured: the endpoint is disabled.
    Disabled,
    /// No `Authorization` header, or not `Bearer <token>`.
    Unauthenticated,
    /// A bearer token, but not the right one.
    Denied,
}

/// Checks an `Authorization` header value against the configured token.
pub(crate) fn check_bearer(token: Option<&Token>, header: Option<&[u8]>) -> Access {
    let Some(token) = token else {
        return Access::Disabled;
    };
    match header.and_then(bearer) {
        None => Access::Unauthenticated,
        Some(presented) if token.matches(presented) => Access::Granted,
        Some(_) => Access::Denied,
    }
}

/// The token of `Bearer <token>` (the scheme in any case, RFC 9110).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let token = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer")
        && !token.is_empty()
        && !token.iter().any(u8::is_ascii_whitespace))
    .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_every_byte_and_the_length_match() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"X3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cret", b"s3crett"));
    }

    #[test]
    fn never_prints_the_token() {
        let t = Token::new("s3cret");
        assert_eq!(format!("{t:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(t.clone())), "Some([redacted])");
    }

    #[test]
    fn bearer_header_outcomes() {
        let t = Token::new("s3cret");
        let check = |h: Option<&str>| check_bearer(Some(&t), h.map(str::as_bytes));
        assert_eq!(check(Some("Bearer s3cret")), Access::Granted);
        assert_eq!(check(Some("bearer  s3cret ")), Access::Granted);
        assert_eq!(check(Some("Bearer wrong")), Access::Denied);
        assert_eq!(check(Some("Bearer s3cret2")), Access::Denied);
        assert_eq!(check(None), Access::Unauthenticated);
        assert_eq!(check(Some("s3cret")), Access::Unauthenticated);
        assert_eq!(check(Some("Basic czNjcmV0")), Access::Unauthenticated);
        assert_eq!(check(Some("Bearer ")), Access::Unauthenticated);
        assert_eq!(check(Some("Bearer a b")), Access::Unauthenticated);
        assert_eq!(
            check_bearer(None, Some(b"Bearer s3cret")),
            Access::Disabled,
            "no token configured: disabled whatever is presented"
        );
    }
}
