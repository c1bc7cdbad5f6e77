//! Chains, addresses, assets and transaction hashes.
//!
//! All are opaque strings behind an `Arc<str>`, so an event can be cloned
//! into many windows cheaply. `0x`-hex addresses and hashes are lowercased
//! on construction so they compare case-insensitively; no checksum is
//! verified (scenario files may hold synthetic ones).

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $normalize:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Builds the identifier, normalizing its spelling.
            pub fn new(s: &str) -> Self {
                let f: fn(&str) -> Arc<str> = $normalize;
                $name(f(s))
            }

            /// The normalized string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok($name::new(&s))
            }
        }
    };
}

fn hex_case_insensitive(s: &str) -> Arc<str> {
    let is_hex = s.len() > 2
        && (s.starts_with("0x") || s.starts_with("0X"))
        && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && s.bytes().any(|b| b.is_ascii_uppercase()) {
        Arc::from(s.to_ascii_lowercase())
    } else {
        Arc::from(s)
    }
}

fn verbatim(s: &str) -> Arc<str> {
    Arc::from(s)
}

string_id!(
    /// A chain's configured name (`ethereum`, `tron`, `bitcoin`, ...).
    Chain,
    verbatim
);
string_id!(
    /// An address on some chain; `0x`-hex addresses are lowercased.
    Address,
    hex_case_insensitive
);
string_id!(
    /// An asset symbol (`ETH`, `USDT`, `BTC`).
    Asset,
    verbatim
);
string_id!(
    /// A transaction hash; `0x`-hex hashes are lowercased.
    TxHash,
    hex_case_insensitive
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_addresses_compare_case_insensitively() {
        assert_eq!(Address::new("0xAbCd"), Address::new("0xabcd"));
        assert_eq!(TxHash::new("0xFF").as_str(), "0xff");
        // Base58 and bech32 strings are not hex: kept as they are.
        assert_ne!(Address::new("TXyZ"), Address::new("txyz"));
        assert_eq!(Address::new("0xnothex").as_str(), "0xnothex");
    }
}
