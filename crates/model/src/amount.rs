//! Exact amounts in base units, and USD values derived from prices.
//!
//! An [`Amount`] is a `U256` of the asset's smallest unit (wei, satoshi,
//! 10⁻⁶ USDT): large enough for any 18-decimal token and for the maximum
//! `uint256` of an unlimited approval. Arithmetic is checked or saturating,
//! never wrapping. A [`Usd`] is an integer of micro-dollars: it is derived
//! from an amount and a [`Price`] and serves thresholds and display only.

use std::fmt;

pub use ruint::aliases::U256;
use serde::{Deserialize, Serialize};

/// Why a decimal or integer amount string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The string was empty.
    #[error("empty amount")]
    Empty,
    /// A character other than a digit or one decimal point.
    #[error("invalid character {0:?} in amount (expected digits and at most one '.')")]
    InvalidChar(char),
    /// More fractional digits than the asset's decimals.
    #[error("{found} fractional digits, at most {max} allowed")]
    TooPrecise {
        /// Fractional digits in the string.
        found: usize,
        /// The asset's decimals.
        max: u8,
    },
    /// The value does not fit in 256 bits.
    #[error("amount does not fit in 256 bits")]
    Overflow,
}

/// An exact, non-negative amount in an asset's base units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub U256);

impl Amount {
    /// Zero base units.
    pub const ZERO: Amount = Amount(U256::ZERO);
    /// The largest amount, `2²⁵⁶ − 1` (an unlimited approval).
    pub const MAX: Amount = Amount(U256::MAX);

    /// Base units from a plain integer.
    pub fn from_base_units(units: u128) -> Self {
        Amount(U256::from(units))
    }

    /// Parses a decimal integer string of base units (`"115792...935"`).
    pub fn parse_base_units(s: &str) -> Result<Self, AmountError> {
        Self::parse_decimal(s, 0)
    }

    /// Parses a decimal string of whole units (`"4950.5"`) into base units of
    /// an asset with `decimals` decimals. No sign, exponent or separators.
    pub fn parse_decimal(s: &str, decimals: u8) -> Result<Self, AmountError> {
        match parse_decimal_u128(s.as_bytes(), decimals) {
            Some(units) => Ok(Amount::from_base_units(units)),
            None => Self::parse_decimal_u256(s, decimals),
        }
    }

    /// The general path of [`Amount::parse_decimal`], digit by digit in
    /// 256 bits; it also decides every error.
    fn parse_decimal_u256(s: &str, decimals: u8) -> Result<Self, AmountError> {
        if s.is_empty() {
            return Err(AmountError::Empty);
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let frac = frac.unwrap_or("");
        if int.is_empty() && frac.is_empty() {
            return Err(AmountError::InvalidChar('.'));
        }
        if frac.len() > usize::from(decimals) {
            if let Some(c) = frac.chars().find(|c| !c.is_ascii_digit()) {
                return Err(AmountError::InvalidChar(c));
            }
            return Err(AmountError::TooPrecise {
                found: frac.len(),
                max: decimals,
            });
        }
        let ten = U256::from(10u8);
        let mut acc = U256::ZERO;
        for c in int.chars().chain(frac.chars()) {
            let d = c.to_digit(10).ok_or(AmountError::InvalidChar(c))?;
            acc = acc
                .checked_mul(ten)
                .and_then(|v| v.checked_add(U256::from(d)))
                .ok_or(AmountError::Overflow)?;
        }
        let pad = usize::from(decimals) - frac.len();
        for _ in 0..pad {
            acc = acc.checked_mul(ten).ok_or(AmountError::Overflow)?;
        }
        Ok(Amount(acc))
    }

    /// The amount as a decimal string of whole units, without trailing
    /// fractional zeros (`"4950.5"`, `"12"`).
    pub fn to_decimal_string(&self, decimals: u8) -> String {
        let digits = self.0.to_string();
        let d = usize::from(decimals);
        if d == 0 {
            return digits;
        }
        let (int, frac) = if digits.len() > d {
            let (i, f) = digits.split_at(digits.len() - d);
            (i.to_string(), f.to_string())
        } else {
            ("0".to_string(), format!("{digits:0>d$}"))
        };
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            int
        } else {
            format!("{int}.{frac}")
        }
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self + other`, capped at [`Amount::MAX`].
    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }

    /// `self − other`, floored at zero.
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// `self × bps / 10 000`, rounded down: a share in basis points.
    pub fn share_bps(self, bps: u32) -> Amount {
        if let Ok(units) = u64::try_from(self.0) {
            return Amount::from_base_units(u128::from(units) * u128::from(bps) / 10_000);
        }
        let wide = self.0.saturating_mul(U256::from(bps));
        Amount(wide / U256::from(10_000u32))
    }

    /// How many basis points `self` is of `whole` (`None` when `whole` is 0),
    /// capped at `u32::MAX`.
    pub fn bps_of(self, whole: Amount) -> Option<u32> {
        if whole.is_zero() {
            return None;
        }
        // Fast path: everything fits 128 bits (any real balance, even in
        // wei), so a native division instead of a 256-bit one.
        if let (Ok(part), Ok(w)) = (u128::try_from(self.0), u128::try_from(whole.0))
            && let Some(p) = part.checked_mul(10_000)
        {
            return Some(u32::try_from(p / w).unwrap_or(u32::MAX));
        }
        let scaled = self.0.saturating_mul(U256::from(10_000u32)) / whole.0;
        Some(u32::try_from(scaled).unwrap_or(u32::MAX))
    }

    /// The amount in whole units as an `f64`, for display and statistics.
    pub fn to_f64_units(&self, decimals: u8) -> f64 {
        let v: f64 = f64::from(self.0);
        v / 10f64.powi(i32::from(decimals))
    }
}

/// The fast path of [`Amount::parse_decimal`]: a well-formed amount of at
/// most 38 digits once scaled (`int` digits plus `decimals`), which always
/// fits a `u128`. `None` for anything else, valid or not: the 256-bit path
/// then decides, so the two never disagree.
fn parse_decimal_u128(s: &[u8], decimals: u8) -> Option<u128> {
    let (int, frac) = match s.iter().position(|&c| c == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &[][..]),
    };
    let decimals = usize::from(decimals);
    if (int.is_empty() && frac.is_empty()) || frac.len() > decimals || int.len() + decimals > 38 {
        return None;
    }
    let mut acc: u128 = 0;
    for &c in int.iter().chain(frac) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        // At most 38 digits: never overflows.
        acc = acc * 10 + u128::from(d);
    }
    let pad = u32::try_from(decimals - frac.len()).ok()?;
    acc.checked_mul(10u128.checked_pow(pad)?)
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Amount::parse_base_units(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A USD price of one whole unit of an asset. Prices are inputs to
/// thresholds and display, so a float is acceptable here; it is turned into
/// an integer of nano-dollars before it meets an [`Amount`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Price(pub f64);

/// 10⁰ to 10³⁸: every power of ten a `u128` holds.
const POW10: [u128; 39] = {
    let mut t = [1u128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

impl Price {
    /// The price in nano-dollars per whole unit, rounded; 0 for a price
    /// that is not a positive finite number.
    pub fn nano_dollars(self) -> u128 {
        if !self.0.is_finite() || self.0 <= 0.0 {
            return 0;
        }
        // Rounded to the nano-dollar; a price above 10²⁹ USD saturates.
        let n = (self.0 * 1e9).round();
        n.min(u128::MAX as f64) as u128
    }
}

/// A USD value as an integer of micro-dollars, derived from an amount and a
/// price. Sums and differences are exact, so windows add and retract
/// without drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(pub u128);

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0);

    /// The value of `amount` base units of an asset with `decimals`
    /// decimals at `price`, rounded down to the micro-dollar.
    pub fn of(amount: Amount, decimals: u8, price: Price) -> Usd {
        Usd::of_nano(amount, decimals, price.nano_dollars())
    }

    /// [`Usd::of`] at a price already in nano-dollars
    /// ([`Price::nano_dollars`]): for a caller valuing many amounts at one
    /// price, which converts the price once.
    pub fn of_nano(amount: Amount, decimals: u8, n: u128) -> Usd {
        if n == 0 || amount.is_zero() {
            return Usd::ZERO;
        }
        // Fast path: everything fits in 128 bits (any real transfer). The
        // engine values every transfer it sees: a table, not a power.
        if let Ok(a) = u128::try_from(amount.0)
            && let (Some(p), Some(scale)) = (
                a.checked_mul(n),
                POW10
                    .get(usize::from(decimals))
                    .and_then(|s| s.checked_mul(1000)),
            )
        {
            // floor(floor(p / s) / 1000) = floor(p / (s × 1000)): one
            // 128-bit division, not two.
            return Usd(p / scale);
        }
        // amount × nano / 10^decimals / 1000: divide first where the product
        // would overflow, which only happens far beyond any real value.
        let nano = U256::from(n);
        let scale = U256::from(10u8).pow(U256::from(decimals));
        let micro = match amount.0.checked_mul(nano) {
            Some(p) => p / scale / U256::from(1000u16),
            None => amount.0 / scale * nano / U256::from(1000u16),
        };
        Usd(u128::try_from(micro).unwrap_or(u128::MAX))
    }

    /// Whole dollars.
    pub fn from_dollars(d: u64) -> Usd {
        Usd(u128::from(d) * 1_000_000)
    }

    /// The value in dollars as an `f64`, for display and reports.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self + other`, capped.
    pub fn saturating_add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }

    /// `self − other`, floored at zero.
    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dollars = self.0 / 1_000_000;
        let cents = (self.0 % 1_000_000) / 10_000;
        write!(f, "${dollars}.{cents:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_whole_and_fractional_units() {
        let a = Amount::parse_decimal("4950.5", 18).unwrap();
        assert_eq!(a.0.to_string(), "4950500000000000000000");
        assert_eq!(a.to_decimal_string(18), "4950.5");
        assert_eq!(Amount::parse_decimal(".5", 1).unwrap().0, U256::from(5u8));
        assert_eq!(
            Amount::parse_decimal("7.", 2).unwrap().0,
            U256::from(700u16)
        );
        assert_eq!(
            Amount::parse_decimal("0.000001", 6).unwrap().0,
            U256::from(1u8)
        );
    }

    #[test]
    fn parses_large_token_amounts_and_max_uint256() {
        // 10^15 tokens of an 18-decimal token (a memecoin's supply).
        let a = Amount::parse_decimal("1000000000000000.123456789012345678", 18).unwrap();
        assert_eq!(
            a.to_decimal_string(18),
            "1000000000000000.123456789012345678"
        );
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(Amount::parse_base_units(max).unwrap(), Amount::MAX);
        let over = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(Amount::parse_base_units(over), Err(AmountError::Overflow));
    }

    #[test]
    fn refuses_malformed_amounts() {
        assert_eq!(Amount::parse_decimal("", 18), Err(AmountError::Empty));
        assert_eq!(
            Amount::parse_decimal("-1", 18),
            Err(AmountError::InvalidChar('-'))
        );
        assert_eq!(
            Amount::parse_decimal("1e5", 18),
            Err(AmountError::InvalidChar('e'))
        );
        assert_eq!(
            Amount::parse_decimal("1.2.3", 18),
            Err(AmountError::InvalidChar('.'))
        );
        assert_eq!(
            Amount::parse_decimal(".", 18),
            Err(AmountError::InvalidChar('.'))
        );
        assert_eq!(
            Amount::parse_decimal("1,000", 18),
            Err(AmountError::InvalidChar(','))
        );
        assert_eq!(
            Amount::parse_decimal("0.1234567", 6),
            Err(AmountError::TooPrecise { found: 7, max: 6 })
        );
        assert_eq!(
            Amount::parse_base_units("1.5"),
            Err(AmountError::TooPrecise { found: 1, max: 0 })
        );
    }

    #[test]
    fn usd_is_exact_integer_micro_dollars() {
        let eth = Amount::parse_decimal("1.5", 18).unwrap();
        assert_eq!(Usd::of(eth, 18, Price(2000.0)), Usd::from_dollars(3000));
        let usdt = Amount::parse_decimal("0.000001", 6).unwrap();
        assert_eq!(Usd::of(usdt, 6, Price(1.0)), Usd(1));
        assert!(Usd::of(Amount::MAX, 18, Price(1e12)).0 > 0);
        assert_eq!(Usd::of(eth, 18, Price(f64::NAN)), Usd::ZERO);
        assert_eq!(Usd::from_dollars(1234).to_string(), "$1234.00");
    }

    #[test]
    fn shares_in_basis_points() {
        let a = Amount::from_base_units(2_500);
        assert_eq!(a.bps_of(Amount::from_base_units(10_000)), Some(2_500));
        assert_eq!(a.bps_of(Amount::ZERO), None);
        assert_eq!(
            Amount::from_base_units(10_000).share_bps(150),
            Amount::from_base_units(150)
        );
    }

    proptest! {
        #[test]
        fn decimal_string_round_trips(raw in any::<u128>(), decimals in 0u8..=30) {
            let a = Amount::from_base_units(raw);
            let s = a.to_decimal_string(decimals);
            prop_assert_eq!(Amount::parse_decimal(&s, decimals), Ok(a));
        }

        #[test]
        fn fast_path_matches_u256_path(
            s in prop_oneof![
                "[0-9]{0,25}(\\.[0-9]{0,20})?",
                "[0-9]{30,45}(\\.[0-9]{0,3})?",
                "[0-9.,e-]{0,12}",
            ],
            decimals in prop_oneof![Just(0u8), Just(6u8), Just(18u8), 0u8..=40],
        ) {
            let slow = Amount::parse_decimal_u256(&s, decimals);
            match parse_decimal_u128(s.as_bytes(), decimals) {
                Some(units) => prop_assert_eq!(&Ok(Amount::from_base_units(units)), &slow),
                None => {
                    // Only errors and values past the fast path's width are left to it.
                    let int = s.split_once('.').map_or(s.as_str(), |(i, _)| i);
                    prop_assert!(slow.is_err() || int.len() + usize::from(decimals) > 38, "{}", s);
                }
            }
            prop_assert_eq!(Amount::parse_decimal(&s, decimals), slow);
        }

        #[test]
        fn bps_fast_path_matches_256_bit_division(
            part in prop_oneof![any::<u64>().prop_map(u128::from), any::<u128>()],
            whole in prop_oneof![(1u64..=u64::MAX).prop_map(u128::from), 1u128..=u128::MAX, Just(1u128)],
        ) {
            let exact = U256::from(part).saturating_mul(U256::from(10_000u32)) / U256::from(whole);
            let want = u32::try_from(exact).unwrap_or(u32::MAX);
            prop_assert_eq!(
                Amount::from_base_units(part).bps_of(Amount::from_base_units(whole)),
                Some(want)
            );
        }

        #[test]
        fn share_fast_path_matches_256_bit_arithmetic(units in any::<u128>(), bps in any::<u32>()) {
            let exact = U256::from(units).saturating_mul(U256::from(bps)) / U256::from(10_000u32);
            prop_assert_eq!(Amount::from_base_units(units).share_bps(bps), Amount(exact));
        }

        #[test]
        fn usd_fast_path_matches_256_bit_arithmetic(
            units in any::<u128>(),
            decimals in 0u8..=36,
            price in 1e-9f64..1e9,
        ) {
            let amount = Amount::from_base_units(units);
            let nano = U256::from(Price(price).nano_dollars());
            let exact = amount.0.checked_mul(nano).map(|p| {
                p / U256::from(10u8).pow(U256::from(decimals)) / U256::from(1000u16)
            });
            if let Some(exact) = exact {
                let want = Usd(u128::try_from(exact).unwrap_or(u128::MAX));
                prop_assert_eq!(Usd::of(amount, decimals, Price(price)), want);
            }
        }

        #[test]
        fn addition_matches_u128(a in any::<u64>(), b in any::<u64>()) {
            let sum = Amount::from_base_units(u128::from(a))
                .checked_add(Amount::from_base_units(u128::from(b)));
            prop_assert_eq!(sum, Some(Amount::from_base_units(u128::from(a) + u128::from(b))));
            let diff = Amount::from_base_units(u128::from(a)).saturating_sub(Amount::from_base_units(u128::from(b)));
            prop_assert_eq!(diff, Amount::from_base_units(u128::from(a.saturating_sub(b))));
        }

        #[test]
        fn usd_is_additive_within_a_micro_dollar(a in 0u64..1u64<<60, b in 0u64..1u64<<60, price in 0.01f64..100_000.0) {
            let (x, y) = (Amount::from_base_units(u128::from(a)), Amount::from_base_units(u128::from(b)));
            let whole = Usd::of(x.saturating_add(y), 18, Price(price)).0;
            let parts = Usd::of(x, 18, Price(price)).0 + Usd::of(y, 18, Price(price)).0;
            prop_assert!(whole >= parts && whole - parts <= 1);
        }
    }
}
