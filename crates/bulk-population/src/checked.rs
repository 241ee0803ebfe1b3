//! Numbers checked when they are made: counts in `1..=MAX`, shares in [0, 1], finite
//! numbers that are >= 0 or > 0, run lengths.
//!
//! The keys of a [`Scenario`](crate::Scenario) have these types, so a value out of its range
//! is refused while the TOML is read: toml's error points at the value, and the
//! [`ScenarioError`](crate::ScenarioError) made of it names the line and the key. A scenario
//! built in code cannot hold such a value at all.
//! [`Scenario::validate`](crate::Scenario::validate) is left with the rules that tie
//! several keys together (a minimum not above its maximum, shares that must not add up to
//! more than 1, a run longer than its warm-up).
//!
//! Each type has `new`, which returns `None` out of range (as [`std::num::NonZeroU32::new`]
//! does), `TryFrom` of the plain number, whose [`RangeError`] says what is wrong, and `get`
//! for the plain number. They serialize as the plain number, so a scenario's TOML and JSON
//! (and its fingerprint) are the same as with plain numbers.

use serde::{Deserialize, Serialize};

use crate::scenario::MAX_DURATION_SECS;

/// A number outside the range of its type; the message states the value and the rule.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum RangeError {
    /// 0 for a count that has no maximum of its own.
    #[error("must be >= 1")]
    Zero,
    /// A count outside `1..=max`.
    #[error("{value} is not in 1..={max}")]
    Count {
        /// The value given.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A share outside [0, 1] (or NaN).
    #[error("{0} is not a share in [0, 1]")]
    Share(f64),
    /// A number that should be finite and >= 0.
    #[error("{0} must be finite and >= 0")]
    Negative(f64),
    /// A number that should be finite and > 0.
    #[error("{0} must be finite and > 0")]
    NotPositive(f64),
    /// A run length over [`MAX_DURATION_SECS`].
    #[error("{0} s is longer than a week ({MAX_DURATION_SECS} s)")]
    TooLong(f64),
}

/// A `u32` count in `1..=MAX` (`MAX` defaults to `u32::MAX`: at least 1, no other bound).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(try_from = "u32", into = "u32")]
pub struct CountU32<const MAX: u32 = { u32::MAX }>(u32);

impl<const MAX: u32> CountU32<MAX> {
    /// `value`, if it is in `1..=MAX`.
    pub const fn new(value: u32) -> Option<Self> {
        if value >= 1 && value <= MAX {
            Some(CountU32(value))
        } else {
            None
        }
    }

    /// The count.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl<const MAX: u32> TryFrom<u32> for CountU32<MAX> {
    type Error = RangeError;

    fn try_from(value: u32) -> Result<Self, RangeError> {
        CountU32::new(value).ok_or_else(|| count_error(value.into(), MAX.into(), u32::MAX.into()))
    }
}

impl<const MAX: u32> From<CountU32<MAX>> for u32 {
    fn from(count: CountU32<MAX>) -> u32 {
        count.get()
    }
}

/// A `u64` count in `1..=MAX` (`MAX` defaults to `u64::MAX`: at least 1, no other bound).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(try_from = "u64", into = "u64")]
pub struct CountU64<const MAX: u64 = { u64::MAX }>(u64);

impl<const MAX: u64> CountU64<MAX> {
    /// `value`, if it is in `1..=MAX`.
    pub const fn new(value: u64) -> Option<Self> {
        if value >= 1 && value <= MAX {
            Some(CountU64(value))
        } else {
            None
        }
    }

    /// The count.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl<const MAX: u64> TryFrom<u64> for CountU64<MAX> {
    type Error = RangeError;

    fn try_from(value: u64) -> Result<Self, RangeError> {
        CountU64::new(value).ok_or_else(|| count_error(value, MAX, u64::MAX))
    }
}

impl<const MAX: u64> From<CountU64<MAX>> for u64 {
    fn from(count: CountU64<MAX>) -> u64 {
        count.get()
    }
}

/// The error of a count out of `1..=max`: a count bounded only by its integer type is
/// told it must be >= 1, the others their range.
fn count_error(value: u64, max: u64, type_max: u64) -> RangeError {
    if max == type_max {
        RangeError::Zero
    } else {
        RangeError::Count { value, max }
    }
}

/// Defines a checked `f64`: `$name(f64)` whose values pass `$ok`, else `$error(value)`.
macro_rules! checked_f64 {
    ($(#[$doc:meta])* $name:ident, |$value:ident| $ok:expr, $error:expr) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, PartialOrd)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(f64);

        impl $name {
            /// `value`, if it is in range.
            pub const fn new($value: f64) -> Option<Self> {
                if $ok { Some($name($value)) } else { None }
            }

            /// The number.
            pub const fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = RangeError;

            fn try_from(value: f64) -> Result<Self, RangeError> {
                $name::new(value).ok_or_else(|| $error(value))
            }
        }

        impl From<$name> for f64 {
            fn from(value: $name) -> f64 {
                value.get()
            }
        }
    };
}

checked_f64!(
    /// A share (a probability) in [0, 1].
    Share,
    |value| value >= 0.0 && value <= 1.0,
    RangeError::Share
);

checked_f64!(
    /// A finite number >= 0 (an exponent, a warm-up in seconds).
    NonNegative,
    |value| value.is_finite() && value >= 0.0,
    RangeError::Negative
);

checked_f64!(
    /// A finite number > 0 (a rate).
    Positive,
    |value| value.is_finite() && value > 0.0,
    RangeError::NotPositive
);

checked_f64!(
    /// A run length in seconds: finite, > 0 and at most [`MAX_DURATION_SECS`] (a week).
    RunSecs,
    |value| value.is_finite() && value > 0.0 && value <= MAX_DURATION_SECS,
    run_secs_error
);

impl Share {
    /// Whether the share is 0: the default of the shares a scenario leaves out of its JSON
    /// when unset (`workload.starttls_share`).
    pub fn is_zero(&self) -> bool {
        self.get() == 0.0
    }
}

fn run_secs_error(value: f64) -> RangeError {
    if value.is_finite() && value > 0.0 {
        RangeError::TooLong(value)
    } else {
        RangeError::NotPositive(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scenario, ScenarioError};

    #[test]
    fn counts_hold_1_to_max() {
        assert_eq!(CountU32::<5>::new(1).map(CountU32::get), Some(1));
        assert_eq!(CountU32::<5>::new(5).map(CountU32::get), Some(5));
        assert_eq!(CountU32::<5>::new(0), None);
        assert_eq!(CountU32::<5>::new(6), None);
        let error = |value: u32| CountU32::<5>::try_from(value).unwrap_err().to_string();
        assert_eq!(error(0), "0 is not in 1..=5");
        assert_eq!(error(6), "6 is not in 1..=5");
        // A count with no maximum of its own is only told it must be at least 1.
        assert_eq!(<CountU32>::new(u32::MAX).map(CountU32::get), Some(u32::MAX));
        assert_eq!(
            <CountU32>::try_from(0).unwrap_err().to_string(),
            "must be >= 1"
        );

        assert_eq!(CountU64::<7>::new(7).map(CountU64::get), Some(7));
        assert_eq!(CountU64::<7>::new(8), None);
        let error = CountU64::<7>::try_from(8).unwrap_err();
        assert_eq!(error, RangeError::Count { value: 8, max: 7 });
        assert_eq!(<CountU64>::new(u64::MAX).map(CountU64::get), Some(u64::MAX));
        assert_eq!(<CountU64>::try_from(0), Err(RangeError::Zero));
    }

    #[test]
    fn numbers_hold_their_ranges() {
        let week = MAX_DURATION_SECS;
        // (value, accepted as Share, NonNegative, Positive, RunSecs)
        let cases = [
            (-1.0, false, false, false, false),
            (-0.0, true, true, false, false),
            (0.0, true, true, false, false),
            (0.5, true, true, true, true),
            (1.0, true, true, true, true),
            (1.5, false, true, true, true),
            (week, false, true, true, true),
            (week * 2.0, false, true, true, false),
            (f64::INFINITY, false, false, false, false),
            (f64::NEG_INFINITY, false, false, false, false),
            (f64::NAN, false, false, false, false),
        ];
        for (value, share, non_negative, positive, run_secs) in cases {
            let got = (
                Share::new(value).is_some(),
                NonNegative::new(value).is_some(),
                Positive::new(value).is_some(),
                RunSecs::new(value).is_some(),
            );
            assert_eq!(got, (share, non_negative, positive, run_secs), "{value}");
            if let Some(share) = Share::new(value) {
                assert_eq!(share.get().to_bits(), value.to_bits());
            }
        }
        let error = |result: Result<f64, RangeError>| result.unwrap_err().to_string();
        assert_eq!(
            error(Share::try_from(1.5).map(f64::from)),
            "1.5 is not a share in [0, 1]"
        );
        assert_eq!(
            error(NonNegative::try_from(-1.0).map(f64::from)),
            "-1 must be finite and >= 0"
        );
        assert_eq!(
            error(Positive::try_from(0.0).map(f64::from)),
            "0 must be finite and > 0"
        );
        assert_eq!(
            error(RunSecs::try_from(f64::NAN).map(f64::from)),
            "NaN must be finite and > 0"
        );
        assert_eq!(
            error(RunSecs::try_from(1e6).map(f64::from)),
            "1000000 s is longer than a week (604800 s)"
        );
    }

    #[test]
    fn they_serialize_as_plain_numbers_and_deserialize_checked() {
        let values = (
            Share::new(0.25).unwrap(),
            CountU32::<9>::new(9).unwrap(),
            <CountU64>::new(3).unwrap(),
            RunSecs::new(2.5).unwrap(),
        );
        let json = serde_json::to_string(&values).unwrap();
        assert_eq!(json, "[0.25,9,3,2.5]");
        assert_eq!(
            serde_json::from_str::<(Share, CountU32<9>, CountU64, RunSecs)>(&json).unwrap(),
            values
        );
        let refused = serde_json::from_str::<Share>("1.25")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("1.25 is not a share in [0, 1]"),
            "{refused}"
        );
        let refused = serde_json::from_str::<CountU32<9>>("10")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("10 is not in 1..=9"), "{refused}");
    }

    /// A value out of its range is refused while the TOML is read, before any rule across
    /// keys: toml's error points at the line of the value, and the scenario's error names
    /// the key too.
    #[test]
    fn scenario_values_out_of_range_are_refused_at_their_key_and_line() {
        let cases = [
            (
                "[population]\nmailboxes = 0\n[workload]\nsessions = 1\n",
                2,
                "population.mailboxes",
                "0 is not in 1..=1000000000",
            ),
            (
                "[workload]\nsessions = 1\n\n# a comment\n[population]\nexplicit_share = -0.5\n",
                6,
                "population.explicit_share",
                "-0.5 is not a share in [0, 1]",
            ),
            (
                "[workload]\nsessions = 1\n\n# a comment\nbulk_share = 3.0\n",
                5,
                "workload.bulk_share",
                "3 is not a share in [0, 1]",
            ),
            (
                "[workload]\nsessions = 1\nrecipient_popularity = \"zipf\"\npopularity_zipf = -1\n",
                4,
                "workload.popularity_zipf",
                "-1 must be finite and >= 0",
            ),
            (
                "[workload]\nmode = \"open\"\nsessions = 1\nrate_per_sec = inf\n",
                4,
                "workload.rate_per_sec",
                "inf must be finite and > 0",
            ),
            (
                "workload = { duration_secs = 1e9 }\n",
                1,
                "workload.duration_secs",
                "1000000000 s is longer than a week (604800 s)",
            ),
            (
                "[workload]\nsessions = 1\nrecipients_max = 100001\n",
                3,
                "workload.recipients_max",
                "100001 is not in 1..=100000",
            ),
            (
                "[workload]\nsessions = 1\ntimeout_ms = 0\n",
                3,
                "workload.timeout_ms",
                "must be >= 1",
            ),
            (
                "[workload]\nsessions = 1\n[server]\nmax_recipients = 0\n",
                4,
                "server.max_recipients",
                "must be >= 1",
            ),
            // No sessions either: the value's range is checked first.
            (
                "population = { domain_size_zipf = -1 }\n",
                1,
                "population.domain_size_zipf",
                "-1 must be finite and >= 0",
            ),
        ];
        for (text, line, key, message) in cases {
            let raw = toml::from_str::<Scenario>(text).expect_err(text);
            assert_eq!(raw.message(), message, "{text:?}");
            assert!(raw.to_string().contains(&format!("line {line},")), "{raw}");
            let error = Scenario::from_toml(text, "case").expect_err(text);
            assert!(matches!(error, ScenarioError::Parse { .. }), "{error:?}");
            assert_eq!(
                error.to_string(),
                format!("case line {line}: {key}: {message}")
            );
        }
    }
}
