//! The canned backend: every RCPT answered by a fixed rule, without any lookup.
//!
//! A server running [`CannedBackend`] does everything a real one does (the same session,
//! parser, replies, pipelining, DATA and sink) except decide by a store: no address is
//! normalized, hashed or even read. That makes it the cheapest server this machine can run
//! with the same session code, its *ceiling*: `bulkbench bench --ceiling` measures it on the
//! same workload, so a measured server's figures can be stated as a share of it, which
//! carries from one machine to another where absolute RCPT/s do not.
//!
//! The rule: of the process's stream of RCPTs (every batch of every connection, in the
//! order their lookups run), RCPT `k` (0-based) is accepted when
//! `floor((k + 1) * share) > floor(k * share)`, and refused as opted out otherwise
//! (Bresenham's line: the first `n` RCPTs hold exactly `floor(n * share)` acceptances,
//! evenly spread). The share is held in parts per billion and the rule is computed in
//! integers, so that holds exactly for every `n`.
//!
//! What the rule decides is all it decides: an address of a domain not served, an unknown
//! mailbox, an address without a lookup key all get the rule's verdict. Its verdicts never
//! agree with a population's except by chance, so a run against it is not verified
//! (`--verify off`), and reports say so.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::AddressBatch;
use crate::{PolicyBackend, PolicyError, Verdict};

/// Parts per billion: the resolution of an [`AcceptShare`].
const BILLION: u64 = 1_000_000_000;

/// The share of RCPTs a [`CannedBackend`] accepts, in `[0, 1]`, to the billionth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AcceptShare {
    /// Parts per billion, at most [`BILLION`].
    ppb: u64,
}

/// An accept share that is not a number in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShareError {
    /// Not a number at all.
    #[error("{0:?} is not a number; expected a decimal share in [0, 1], as in 0.25")]
    NotANumber(String),
    /// A number, but not a share (NaN and infinities included).
    #[error("{0} is not a share: expected a number in [0, 1]")]
    OutOfRange(f64),
    /// A ratio of no RCPTs.
    #[error("no share of nothing: the ratio's denominator is 0")]
    EmptyRatio,
}

impl AcceptShare {
    /// Every RCPT accepted (`canned` without a share).
    pub const ALL: AcceptShare = AcceptShare { ppb: BILLION };
    /// Every RCPT refused.
    pub const NONE: AcceptShare = AcceptShare { ppb: 0 };

    /// The share nearest to `share`, which must be in `[0, 1]`.
    pub fn new(share: f64) -> Result<AcceptShare, ShareError> {
        if !(0.0..=1.0).contains(&share) {
            return Err(ShareError::OutOfRange(share));
        }
        // In range, so the product is in [0, 1e9] and the cast exact after rounding.
        Ok(AcceptShare {
            ppb: (share * BILLION as f64).round() as u64,
        })
    }

    /// `accepted / of`, to the nearest billionth; `accepted` may not exceed `of`.
    pub fn from_ratio(accepted: u64, of: u64) -> Result<AcceptShare, ShareError> {
        if of == 0 {
            return Err(ShareError::EmptyRatio);
        }
        if accepted > of {
            return Err(ShareError::OutOfRange(accepted as f64 / of as f64));
        }
        let ppb =
            (u128::from(accepted) * u128::from(BILLION) + u128::from(of) / 2) / u128::from(of);
        Ok(AcceptShare { ppb: ppb as u64 })
    }

    /// The share as a number in `[0, 1]`.
    pub fn get(self) -> f64 {
        self.ppb as f64 / BILLION as f64
    }

    /// How many of the first `n` RCPTs of the stream are accepted: `floor(n * share)`.
    pub fn accepted_among(self, n: u64) -> u64 {
        (u128::from(n) * u128::from(self.ppb) / u128::from(BILLION)) as u64
    }

    /// Whether RCPT `k` (0-based) of the stream is accepted.
    pub fn accepts(self, k: u64) -> bool {
        self.accepted_among(k.saturating_add(1)) > self.accepted_among(k)
    }
}

impl FromStr for AcceptShare {
    type Err = ShareError;

    fn from_str(text: &str) -> Result<AcceptShare, ShareError> {
        let share: f64 = text
            .parse()
            .map_err(|_| ShareError::NotANumber(text.to_owned()))?;
        AcceptShare::new(share)
    }
}

/// The shortest decimal that parses back to the same share: `0.25`, `1`, `0`.
impl fmt::Display for AcceptShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.ppb / BILLION, self.ppb % BILLION);
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:09}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// A [`PolicyBackend`] answering every RCPT by the [`AcceptShare`] rule (module docs):
/// accepted, or refused as [`Verdict::OptedOut`] (`550 5.7.1` in a BULK transaction; in a
/// MAIL transaction, where preferences are not consulted, that is a `250` too).
///
/// A lookup reads nothing of its batch but its length: one atomic add reserves the batch's
/// places in the stream, and each verdict is two integer multiplications.
#[derive(Debug)]
pub struct CannedBackend {
    share: AcceptShare,
    /// The place in the stream of the next RCPT.
    next: AtomicU64,
}

impl CannedBackend {
    /// A backend accepting `share` of the RCPTs it answers.
    pub fn new(share: AcceptShare) -> CannedBackend {
        CannedBackend {
            share,
            next: AtomicU64::new(0),
        }
    }

    /// Its rule's share.
    pub fn share(&self) -> AcceptShare {
        self.share
    }

    /// RCPTs answered so far.
    pub fn answered(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Appends the verdicts of the next `count` RCPTs of the stream to `out`.
    pub fn answer(&self, count: usize, out: &mut Vec<Verdict>) {
        let count = count as u64;
        let first = self.next.fetch_add(count, Ordering::Relaxed);
        out.extend((first..first.saturating_add(count)).map(|k| {
            if self.share.accepts(k) {
                Verdict::Accept
            } else {
                Verdict::OptedOut
            }
        }));
    }
}

impl PolicyBackend for CannedBackend {
    fn name(&self) -> &'static str {
        "canned"
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        self.answer(batch.len(), out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(text: &str) -> AcceptShare {
        text.parse().unwrap()
    }

    #[test]
    fn shares_parse_from_decimals_in_the_unit_interval_and_print_back() {
        for (text, printed) in [
            ("0", "0"),
            ("1", "1"),
            ("1.0", "1"),
            ("0.25", "0.25"),
            (".5", "0.5"),
            ("0.123456789", "0.123456789"),
            ("0.0000000004", "0"),
            ("0.9999999996", "1"),
            ("-0", "0"),
            ("2.5e-1", "0.25"),
        ] {
            let parsed = share(text);
            assert_eq!(parsed.to_string(), printed, "{text}");
            assert_eq!(share(printed), parsed, "{text} round trip");
        }
        assert_eq!(share("1"), AcceptShare::ALL);
        assert_eq!(share("0"), AcceptShare::NONE);
        assert_eq!(share("0.3").get(), 0.3);
        for bad in ["1.5", "-0.1", "NaN", "inf", "-inf", "1.0000001"] {
            assert!(
                matches!(bad.parse::<AcceptShare>(), Err(ShareError::OutOfRange(_))),
                "{bad}"
            );
        }
        for bad in ["", "x", "0.5x", " 0.5", "50%", "1/2"] {
            let error = bad.parse::<AcceptShare>().unwrap_err();
            assert_eq!(error, ShareError::NotANumber(bad.to_owned()));
            assert!(error.to_string().contains("[0, 1]"), "{error}");
        }
    }

    #[test]
    fn ratios_round_to_the_nearest_billionth() {
        assert_eq!(AcceptShare::from_ratio(1, 4).unwrap(), share("0.25"));
        assert_eq!(AcceptShare::from_ratio(7, 7).unwrap(), AcceptShare::ALL);
        assert_eq!(AcceptShare::from_ratio(0, 9).unwrap(), AcceptShare::NONE);
        assert_eq!(
            AcceptShare::from_ratio(1, 3).unwrap().to_string(),
            "0.333333333"
        );
        assert_eq!(
            AcceptShare::from_ratio(2, 3).unwrap().to_string(),
            "0.666666667"
        );
        assert_eq!(
            AcceptShare::from_ratio(u64::MAX - 1, u64::MAX).unwrap(),
            AcceptShare::ALL
        );
        assert_eq!(AcceptShare::from_ratio(1, 0), Err(ShareError::EmptyRatio));
        assert!(matches!(
            AcceptShare::from_ratio(5, 4),
            Err(ShareError::OutOfRange(_))
        ));
    }

    /// The first `n` RCPTs hold `floor(n * share)` acceptances for every `n`, and they are
    /// spread evenly: between two acceptances lie `floor(1/share)` or `ceil(1/share)`
    /// places, as on Bresenham's line.
    #[test]
    fn the_rule_accepts_exactly_the_share_of_every_prefix_evenly_spread() {
        for text in [
            "0",
            "0.000001",
            "0.1",
            "0.25",
            "0.3",
            "0.333333333",
            "0.5",
            "0.7",
            "0.873",
            "0.999",
            "1",
        ] {
            let rule = share(text);
            let backend = CannedBackend::new(rule);
            let mut verdicts = Vec::new();
            // Batches of uneven sizes, as reads of pipelined RCPTs come.
            let mut size = 1;
            while verdicts.len() < 200_000 {
                backend.answer(size, &mut verdicts);
                size = size % 97 + 13;
            }
            assert_eq!(backend.answered(), verdicts.len() as u64);
            let (numerator, denominator) = (rule.ppb as u128, BILLION as u128);
            let mut accepted = 0u128;
            let mut last: Option<usize> = None;
            for (k, verdict) in verdicts.iter().enumerate() {
                if *verdict == Verdict::Accept {
                    accepted += 1;
                    if let Some(last) = last {
                        // gap = places from one acceptance to the next.
                        let gap = (k - last) as u128;
                        let (low, high) =
                            (denominator / numerator, denominator.div_ceil(numerator));
                        assert!(low <= gap && gap <= high, "{text}: gap {gap} at {k}");
                    }
                    last = Some(k);
                } else {
                    assert_eq!(*verdict, Verdict::OptedOut, "{text}");
                }
                // floor(n * share) for n = k + 1, in exact integers.
                let n = k as u128 + 1;
                assert_eq!(accepted, n * numerator / denominator, "{text} after {n}");
            }
        }
    }

    #[test]
    fn the_stream_is_shared_by_every_caller_and_stays_exact() {
        let backend = std::sync::Arc::new(CannedBackend::new(share("0.37")));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let backend = backend.clone();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..2_000 {
                        backend.answer(1 + (i + t) % 50, &mut out);
                    }
                    out.iter().filter(|v| **v == Verdict::Accept).count() as u64
                })
            })
            .collect();
        let accepted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let answered = backend.answered();
        let asked: u64 = (0..4u64)
            .flat_map(|t| (0..2_000u64).map(move |i| 1 + (i + t) % 50))
            .sum();
        assert_eq!(answered, asked);
        assert_eq!(accepted, share("0.37").accepted_among(answered));
    }

    /// No lookup: what the address is does not matter, only its place in the stream. A
    /// memory backend would call these unknown, foreign or keyless.
    #[tokio::test(flavor = "current_thread")]
    async fn every_address_gets_the_rules_verdict_whatever_it_is() {
        let backend = CannedBackend::new(share("0.5"));
        let mut batch = AddressBatch::new();
        for address in [
            &b"ann@served.example"[..],
            b"nobody@served.example",
            b"x@elsewhere.example",
            b"no-at-sign",
            b"",
            b"\"quoted local\"@[192.0.2.1]",
        ] {
            batch.push(address);
        }
        let mut verdicts = vec![Verdict::NotLocal];
        backend.lookup(&batch, &mut verdicts).await.unwrap();
        use Verdict::{Accept, NotLocal, OptedOut};
        // The caller's verdicts are kept; then 0.5: refused, accepted, refused, ...
        assert_eq!(
            verdicts,
            [
                NotLocal, OptedOut, Accept, OptedOut, Accept, OptedOut, Accept
            ]
        );
        let all = CannedBackend::new(AcceptShare::ALL);
        let mut verdicts = Vec::new();
        all.lookup(&batch, &mut verdicts).await.unwrap();
        assert_eq!(verdicts, [Accept; 6]);
        let none = CannedBackend::new(AcceptShare::NONE);
        let mut verdicts = Vec::new();
        none.lookup(&batch, &mut verdicts).await.unwrap();
        assert_eq!(verdicts, [OptedOut; 6]);
        assert_eq!(none.name(), "canned");
    }
}
