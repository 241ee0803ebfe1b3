//! Per-item RNGs and the small bijections the generators use: the workspace's one seeding
//! module (and its one SplitMix64).
//!
//! Every random draw in this crate comes from an RNG seeded by (scenario seed, stream,
//! index of the thing drawn). Nothing is drawn from a shared or per-worker RNG, so the
//! output does not depend on how work is split across threads or shards.
//!
//! Synthetic data elsewhere in the workspace comes from here too: benches and the
//! backends' scale tests build their populations with [`PopulationModel`] and draw their
//! lookups with [`RecipientDraws`]; test code that needs bare deterministic numbers uses
//! [`mix`] or [`item_rng`] (public for that) rather than a SplitMix64 of its own.
//!
//! [`PopulationModel`]: crate::PopulationModel
//! [`RecipientDraws`]: crate::RecipientDraws
//!
//! The RNG is `Xoshiro256PlusPlus`, named rather than `StdRng`/`SmallRng`: rand documents
//! that those two may change algorithm between releases, which would silently change every
//! population and workload of a given seed.

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

/// The RNG type behind every draw.
pub type ItemRng = Xoshiro256PlusPlus;

/// Streams keep the RNGs of different kinds of items independent: mailbox 7 and session 7
/// of one seed must not draw the same numbers.
pub(crate) const STREAM_MAILBOX: u64 = 1;
pub(crate) const STREAM_DOMAIN: u64 = 2;
pub(crate) const STREAM_SESSION: u64 = 3;
pub(crate) const STREAM_ARRIVAL: u64 = 4;
/// Offsets of the local-part bijections (see `population.rs`).
pub(crate) const STREAM_LOCAL_OFFSET: u64 = 5;
/// Offset of the popularity rank -> mailbox permutation.
pub(crate) const STREAM_POPULARITY: u64 = 6;
/// Offset of the domain-name bijection.
pub(crate) const STREAM_DOMAIN_NAME: u64 = 7;
/// Recipients drawn one by one, outside sessions (`RecipientDraws`).
pub(crate) const STREAM_RECIPIENT: u64 = 8;
/// Whether a session uses STARTTLS: a stream of its own, so that adding the choice left
/// every other draw of a session as it was.
pub(crate) const STREAM_STARTTLS: u64 = 9;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finalizer: a bijection on u64 with good avalanche.
pub fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit value derived from (seed, stream, index). For a fixed seed and stream it is a
/// bijection of `index`, so distinct items never share a seed.
pub fn mix(seed: u64, stream: u64, index: u64) -> u64 {
    let base = fmix(fmix(seed.wrapping_add(GOLDEN)) ^ stream.wrapping_mul(GOLDEN));
    fmix(base ^ index)
}

/// The RNG of item `index` of `stream` under `seed`.
pub fn item_rng(seed: u64, stream: u64, index: u64) -> ItemRng {
    ItemRng::seed_from_u64(mix(seed, stream, index))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A multiplier coprime with `n`, near `n / phi`, so that `x -> x * m mod n` is a
/// bijection of `0..n` that scatters consecutive values (a plain multiplier of 1 would not).
pub(crate) fn scatter_multiplier(n: u64) -> u64 {
    if n <= 2 {
        return 1;
    }
    let mut m = ((n as f64) * 0.618_033_988_749_895) as u64;
    m = m.clamp(1, n - 1);
    // Numbers coprime with n are dense (Euler's phi), so this loop stops within a few steps;
    // 1 is coprime with everything, which bounds it anyway.
    while gcd(m, n) != 1 {
        m = if m + 1 >= n { 1 } else { m + 1 };
    }
    m
}

/// `x -> (x * multiplier + offset) mod n`: a bijection of `0..n` when the multiplier is
/// coprime with `n`. Only called with `n >= 1`.
pub(crate) fn affine(x: u64, multiplier: u64, offset: u64, n: u64) -> u64 {
    debug_assert!(n >= 1);
    ((u128::from(x) * u128::from(multiplier) + u128::from(offset)) % u128::from(n)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_with_scatter_multiplier_is_a_bijection() {
        for n in [1u64, 2, 3, 4, 10, 26, 97, 100, 256, 1000, 6552] {
            let m = scatter_multiplier(n);
            assert_eq!(gcd(m, n), 1, "n={n}");
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = affine(x, m, 12345, n) as usize;
                assert!(!seen[y], "n={n}: {y} twice");
                seen[y] = true;
            }
        }
    }

    #[test]
    fn mix_separates_streams_and_indices() {
        assert_ne!(mix(1, STREAM_MAILBOX, 7), mix(1, STREAM_SESSION, 7));
        assert_ne!(mix(1, STREAM_MAILBOX, 7), mix(1, STREAM_MAILBOX, 8));
        assert_ne!(mix(1, STREAM_MAILBOX, 7), mix(2, STREAM_MAILBOX, 7));
    }
}
