//! Incidents as timed steps, modelled on real drains.

use drainguard_model::Address;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{
    Incident,
    exchange::Step,
    market::{SEC, millis},
    topology::{
        BTC, BTC_HOT, ETH, ETH_HOT_1, ETH_HOT_2, ETH_TRIPWIRE, ETH_USDC, ETH_USDT, ETHEREUM,
        Family, Ids, MATIC, POLYGON_HOT, POLYGON_USDT, TRON_HOT, TRON_USDT, TRX, WALLETS,
    },
};

/// The thefts of a [`Incident::WithdrawalAbuse`] after the first two.
const ABUSE_PATTERN: &[(usize, usize)] = &[
    (ETH_HOT_1, ETH_USDT),
    (TRON_HOT, TRON_USDT),
    (ETH_HOT_2, ETH_USDT),
    (ETH_HOT_1, ETH),
    (TRON_HOT, TRON_USDT),
    (ETH_HOT_2, ETH),
    (ETH_HOT_1, ETH_USDT),
];

/// Thefts in a [`Incident::WithdrawalAbuse`].
const ABUSE_THEFTS: usize = 16;

fn theft(wallet: usize, asset: usize, share_bps: u32, to: &Address) -> Step {
    Step::Theft {
        wallet,
        asset,
        share_bps,
        to: to.clone(),
        intent: false,
    }
}

/// The steps of `incident` starting at `t0`, with their times. Rushes are
/// not steps: they shape the arrival rates instead.
pub(crate) fn steps(
    incident: &Incident,
    t0: i64,
    ids: &mut Ids,
    rng: &mut ChaCha8Rng,
) -> Vec<(i64, Step)> {
    let mut out = Vec::new();
    match incident {
        Incident::StolenKeyDrain => {
            // CoinEx, 12 Sept 2023: the attacker holds the hot keys and
            // signs transfers the withdrawal system never asked for.
            let evm = ids.address(Family::Evm);
            let tron = ids.address(Family::Tron);
            let btc = ids.address(Family::Bitcoin);
            out.push((t0, Step::HaltRefills));
            out.push((t0, theft(ETH_HOT_1, ETH, 8_500, &evm)));
            let t1 = t0 + millis(rng, 30_000, 90_000);
            out.push((t1, theft(ETH_HOT_1, ETH_USDT, 9_000, &evm)));
            let t1b = t1 + millis(rng, 3_000, 15_000);
            out.push((t1b, theft(ETH_HOT_1, ETH_USDC, 9_000, &evm)));
            let t2 = t1 + 60 * SEC;
            out.push((t2, theft(ETH_HOT_2, ETH, 9_000, &evm)));
            let t2b = t2 + millis(rng, 3_000, 15_000);
            out.push((t2b, theft(ETH_HOT_2, ETH_USDT, 9_000, &evm)));
            // eth-hot-1's key also holds polygon-hot (one EOA on every EVM
            // chain): swept to the same address minutes later (Phemex).
            let tp = t0 + millis(rng, 120_000, 240_000);
            out.push((tp, theft(POLYGON_HOT, POLYGON_USDT, 9_000, &evm)));
            let tpb = tp + millis(rng, 3_000, 15_000);
            out.push((tpb, theft(POLYGON_HOT, MATIC, 9_000, &evm)));
            let t3 = t0 + millis(rng, 180_000, 300_000);
            out.push((t3, theft(TRON_HOT, TRX, 9_000, &tron)));
            let t3b = t3 + millis(rng, 3_000, 20_000);
            out.push((t3b, theft(TRON_HOT, TRON_USDT, 9_000, &tron)));
            let t4 = t0 + millis(rng, 360_000, 540_000);
            out.push((t4, theft(BTC_HOT, BTC, 9_000, &btc)));
            out.push((t0 + 20 * 60 * SEC, Step::SweepAll));
        }
        Incident::WithdrawalAbuse => {
            // The withdrawal system itself is abused: every theft has its
            // intent, but the destinations are few and shared.
            let evm: Vec<_> = (0..3).map(|_| ids.address(Family::Evm)).collect();
            let tron: Vec<_> = (0..2).map(|_| ids.address(Family::Tron)).collect();
            let (mut n_evm, mut n_tron) = (0usize, 0usize);
            for i in 0..ABUSE_THEFTS {
                let (wallet, asset) = match i {
                    0 => (ETH_HOT_1, ETH),
                    1 => (ETH_HOT_2, ETH),
                    _ => ABUSE_PATTERN[(i - 2) % ABUSE_PATTERN.len()],
                };
                let to = if WALLETS[wallet].chain == ETHEREUM {
                    // The first two thefts, from both ethereum wallets, go
                    // to the same address; then the three take turns.
                    let k = if i < 2 { 0 } else { n_evm % evm.len() };
                    n_evm += 1;
                    evm[k].clone()
                } else {
                    let k = n_tron % tron.len();
                    n_tron += 1;
                    tron[k].clone()
                };
                let t = t0 + i64::try_from(i).unwrap_or(0) * 45 * SEC + millis(rng, 0, 20_000);
                out.push((
                    t,
                    Step::Theft {
                        wallet,
                        asset,
                        share_bps: rng.gen_range(400..=800),
                        to,
                        intent: true,
                    },
                ));
            }
        }
        Incident::WithdrawalRush { .. } => {}
        Incident::GiantWithdrawal => {
            // DMM Bitcoin, May 2024: one announced withdrawal of most of
            // the hot wallet.
            out.push((
                t0,
                Step::Theft {
                    wallet: BTC_HOT,
                    asset: BTC,
                    share_bps: 6_000,
                    to: ids.address(Family::Bitcoin),
                    intent: true,
                },
            ));
        }
        Incident::TripwireSweep => {
            // The attacker holds the keys kept beside the hot keys, the
            // decoy's among them, and tries each: the decoy is swept
            // first, eth-hot-1 a minute later.
            let thief = ids.address(Family::Evm);
            out.push((t0, theft(ETH_TRIPWIRE, ETH, 9_800, &thief)));
            let t1 = t0 + millis(rng, 40_000, 90_000);
            out.push((t1, theft(ETH_HOT_1, ETH, 9_000, &thief)));
        }
        Incident::UnknownApproval => {
            let spender = ids.address(Family::Evm);
            let thief = ids.address(Family::Evm);
            out.push((
                t0,
                Step::Approval {
                    wallet: ETH_HOT_1,
                    asset: ETH_USDT,
                    spender,
                },
            ));
            // The spender's transferFrom, two minutes later.
            out.push((t0 + 120 * SEC, theft(ETH_HOT_1, ETH_USDT, 9_500, &thief)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn abuse_shares_one_address_between_the_ethereum_wallets() {
        let mut ids = Ids::new(ChaCha8Rng::seed_from_u64(1));
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let steps = steps(&Incident::WithdrawalAbuse, 0, &mut ids, &mut rng);
        assert_eq!(steps.len(), ABUSE_THEFTS);
        let dest = |i: usize| match &steps[i].1 {
            Step::Theft { wallet, to, .. } => (*wallet, to.clone()),
            _ => panic!("theft"),
        };
        assert_eq!(dest(0).0, ETH_HOT_1);
        assert_eq!(dest(1).0, ETH_HOT_2);
        assert_eq!(dest(0).1, dest(1).1);
        assert!(steps.windows(2).all(|w| w[0].0 < w[1].0));
        let last = steps[ABUSE_THEFTS - 1].0;
        assert!(last <= 12 * 60 * SEC, "{last}");
        let tron_thefts = (0..ABUSE_THEFTS).filter(|&i| dest(i).0 == TRON_HOT).count();
        assert!(tron_thefts >= 3);
    }
}
