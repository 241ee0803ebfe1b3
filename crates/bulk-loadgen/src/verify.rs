//! Reply verification: every RCPT reply is classified and checked against the verdict the
//! population predicts (docs/measuring.md, "Verifying RCPT replies").

use std::collections::BTreeMap;

use bulk_policy::Verdict;
use bulk_population::Transaction;
use bulk_proto::EnhancedCode;
use serde::{Deserialize, Serialize};

/// What a RCPT reply says, by its code and enhanced code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyClass {
    /// Any 2xx.
    Accepted,
    /// `550 5.7.1`: refused by preference.
    OptedOut,
    /// `550 5.1.1`: no such mailbox.
    Unknown,
    /// `554 5.7.1`: domain not served (no relaying).
    NotLocal,
    /// Any 4xx.
    Tempfail,
    /// Anything else.
    Other,
}

impl ReplyClass {
    /// All classes, in report order.
    pub const ALL: [ReplyClass; 6] = [
        ReplyClass::Accepted,
        ReplyClass::OptedOut,
        ReplyClass::Unknown,
        ReplyClass::NotLocal,
        ReplyClass::Tempfail,
        ReplyClass::Other,
    ];

    /// The class of a reply.
    pub fn of(code: u16, enhanced: Option<EnhancedCode>) -> ReplyClass {
        let status = enhanced.map(|e| (e.class, e.subject, e.detail));
        match (code, status) {
            (200..=299, _) => ReplyClass::Accepted,
            (400..=499, _) => ReplyClass::Tempfail,
            (550, Some((5, 7, 1))) => ReplyClass::OptedOut,
            (550, Some((5, 1, 1))) => ReplyClass::Unknown,
            (554, Some((5, 7, 1))) => ReplyClass::NotLocal,
            _ => ReplyClass::Other,
        }
    }

    /// The class's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ReplyClass::Accepted => "accepted",
            ReplyClass::OptedOut => "opted_out",
            ReplyClass::Unknown => "unknown",
            ReplyClass::NotLocal => "not_local",
            ReplyClass::Tempfail => "tempfail",
            ReplyClass::Other => "other",
        }
    }

    fn is_permanent_refusal(self) -> bool {
        matches!(
            self,
            ReplyClass::OptedOut | ReplyClass::Unknown | ReplyClass::NotLocal | ReplyClass::Other
        )
    }
}

/// How strictly replies are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Classes including enhanced codes (the default against bulkbench's own server).
    #[default]
    Strict,
    /// 2xx against 5xx only, for servers without enhanced status codes.
    Basic,
    /// No checking.
    Off,
}

/// What the generator expects of the server, beyond the population.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectations {
    /// RCPT commands per transaction the server answers; later ones expect `452`.
    pub max_recipients: u32,
    /// The server answers unknown mailboxes like opted-out ones (`550 5.7.1`).
    pub harvest_resistant: bool,
    /// The server refuses opted-out recipients in every transaction, MAIL included
    /// (a server without the BULK verb that applies preferences to all mail).
    pub preferences_apply_to_all: bool,
}

impl Expectations {
    /// What a server run with `server`'s settings answers.
    pub fn of(server: &bulk_population::ServerConfig) -> Self {
        Expectations {
            max_recipients: server.max_recipients.get(),
            harvest_resistant: server.harvest_resistant,
            preferences_apply_to_all: server.preferences_apply_to
                == bulk_population::PreferencesApplyTo::All,
        }
    }

    /// The expected class of RCPT number `position` (1-based) in a transaction of `bulk`
    /// kind (false: MAIL) for a recipient with `verdict`.
    pub fn expected(&self, bulk: bool, verdict: Verdict, position: u32) -> ReplyClass {
        if position > self.max_recipients {
            return ReplyClass::Tempfail;
        }
        match verdict {
            Verdict::Accept => ReplyClass::Accepted,
            // In a MAIL transaction preferences are not consulted, unless the server
            // applies them to all mail.
            Verdict::OptedOut if !bulk && !self.preferences_apply_to_all => ReplyClass::Accepted,
            Verdict::OptedOut => ReplyClass::OptedOut,
            Verdict::UnknownMailbox if self.harvest_resistant => ReplyClass::OptedOut,
            Verdict::UnknownMailbox => ReplyClass::Unknown,
            Verdict::NotLocal => ReplyClass::NotLocal,
        }
    }
}

/// How replies are checked in one run: what the server should answer, and how strictly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verifier {
    /// The server's recipient limit and harvest mode.
    pub expectations: Expectations,
    /// Strict, basic or off.
    pub mode: VerifyMode,
}

impl Verifier {
    /// Checks the reply class `actual` of RCPT number `index` (0-based) of `transaction`
    /// (of session `session`), sent in a transaction of `bulk` kind (false: MAIL, also
    /// after a fallback): records a mismatch, with `reply` (the reply line) as its example.
    /// Returns whether it was accepted.
    #[allow(clippy::too_many_arguments)]
    pub fn check_rcpt(
        &self,
        session: u64,
        transaction: &Transaction,
        bulk: bool,
        index: usize,
        actual: ReplyClass,
        reply: impl FnOnce() -> String,
        mismatches: &mut Mismatches,
    ) -> bool {
        if let Some(recipient) = transaction.recipients.get(index) {
            let position = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let expected = self
                .expectations
                .expected(bulk, recipient.verdict, position);
            if is_mismatch(self.mode, expected, actual) {
                mismatches.record(expected, actual, || MismatchExample {
                    session,
                    recipient: recipient.address.clone(),
                    expected,
                    reply: reply(),
                });
            }
        }
        actual == ReplyClass::Accepted
    }
}

/// Whether `actual` contradicts `expected` under `mode`. A 4xx answer is a temporary
/// failure, never a mismatch; an expected 4xx (the recipient limit) answered with 2xx or
/// 5xx is one, since the server then ignored its own limit.
pub fn is_mismatch(mode: VerifyMode, expected: ReplyClass, actual: ReplyClass) -> bool {
    if actual == ReplyClass::Tempfail {
        return false;
    }
    match mode {
        VerifyMode::Off => false,
        VerifyMode::Strict => expected != actual,
        VerifyMode::Basic => match expected {
            ReplyClass::Accepted => actual != ReplyClass::Accepted,
            ReplyClass::Tempfail => true,
            _ => !actual.is_permanent_refusal(),
        },
    }
}

/// One mismatch kept as an example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MismatchExample {
    /// The session's index in the workload.
    pub session: u64,
    /// The recipient as sent.
    pub recipient: String,
    /// What the population predicted.
    pub expected: ReplyClass,
    /// The reply line received.
    pub reply: String,
}

/// Mismatches counted by (expected, actual) class, with the first few kept as examples.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatches {
    /// Total mismatched RCPT replies.
    pub total: u64,
    /// Counts by `expected->actual`.
    pub by_class: BTreeMap<String, u64>,
    /// The first [`Mismatches::EXAMPLES`] mismatches.
    pub examples: Vec<MismatchExample>,
}

impl Mismatches {
    /// How many examples are kept.
    pub const EXAMPLES: usize = 10;

    /// Counts one mismatch.
    pub fn record(
        &mut self,
        expected: ReplyClass,
        actual: ReplyClass,
        example: impl FnOnce() -> MismatchExample,
    ) {
        self.total += 1;
        *self
            .by_class
            .entry(format!("{}->{}", expected.name(), actual.name()))
            .or_default() += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(example());
        }
    }

    /// Adds another set of mismatches (from another worker or shard).
    pub fn merge(&mut self, other: &Mismatches) {
        self.total += other.total;
        for (key, count) in &other.by_class {
            *self.by_class.entry(key.clone()).or_default() += count;
        }
        let room = Self::EXAMPLES.saturating_sub(self.examples.len());
        self.examples
            .extend(other.examples.iter().take(room).cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enhanced(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
        Some(EnhancedCode {
            class,
            subject,
            detail,
        })
    }

    #[test]
    fn classes() {
        let cases = [
            (250, enhanced(2, 1, 5), ReplyClass::Accepted),
            (251, None, ReplyClass::Accepted),
            (550, enhanced(5, 7, 1), ReplyClass::OptedOut),
            (550, enhanced(5, 1, 1), ReplyClass::Unknown),
            (554, enhanced(5, 7, 1), ReplyClass::NotLocal),
            (451, enhanced(4, 3, 0), ReplyClass::Tempfail),
            (452, None, ReplyClass::Tempfail),
            (550, None, ReplyClass::Other),
            (553, enhanced(5, 1, 3), ReplyClass::Other),
        ];
        for (code, status, class) in cases {
            assert_eq!(ReplyClass::of(code, status), class, "{code} {status:?}");
        }
    }

    #[test]
    fn expectations_follow_kind_limit_and_harvest_mode() {
        let normal = Expectations {
            max_recipients: 2,
            harvest_resistant: false,
            preferences_apply_to_all: false,
        };
        assert_eq!(
            normal.expected(true, Verdict::OptedOut, 1),
            ReplyClass::OptedOut
        );
        assert_eq!(
            normal.expected(false, Verdict::OptedOut, 1),
            ReplyClass::Accepted
        );
        assert_eq!(
            normal.expected(true, Verdict::UnknownMailbox, 2),
            ReplyClass::Unknown
        );
        assert_eq!(
            normal.expected(true, Verdict::Accept, 3),
            ReplyClass::Tempfail
        );
        let harvest = Expectations {
            harvest_resistant: true,
            preferences_apply_to_all: false,
            ..normal
        };
        assert_eq!(
            harvest.expected(false, Verdict::UnknownMailbox, 1),
            ReplyClass::OptedOut
        );
        // A server that applies preferences to all mail refuses opted-out recipients
        // under MAIL too (Postfix with an access map, `policyd --bulk every`).
        let all_mail = Expectations {
            preferences_apply_to_all: true,
            ..normal
        };
        assert_eq!(
            all_mail.expected(false, Verdict::OptedOut, 1),
            ReplyClass::OptedOut
        );
        assert_eq!(
            all_mail.expected(false, Verdict::Accept, 1),
            ReplyClass::Accepted
        );
        let scenario = bulk_population::ServerConfig {
            preferences_apply_to: bulk_population::PreferencesApplyTo::All,
            ..bulk_population::ServerConfig::default()
        };
        assert!(Expectations::of(&scenario).preferences_apply_to_all);
    }

    #[test]
    fn mismatch_rules() {
        use ReplyClass::*;
        let cases = [
            (VerifyMode::Strict, Accepted, Accepted, false),
            (VerifyMode::Strict, OptedOut, Unknown, true),
            (VerifyMode::Strict, Accepted, Tempfail, false),
            (VerifyMode::Strict, Tempfail, Accepted, true),
            (VerifyMode::Basic, OptedOut, Unknown, false),
            (VerifyMode::Basic, OptedOut, Other, false),
            (VerifyMode::Basic, OptedOut, Accepted, true),
            (VerifyMode::Basic, Accepted, NotLocal, true),
            (VerifyMode::Off, Accepted, NotLocal, false),
        ];
        for (mode, expected, actual, mismatch) in cases {
            assert_eq!(
                is_mismatch(mode, expected, actual),
                mismatch,
                "{mode:?} {expected:?} {actual:?}"
            );
        }
    }

    #[test]
    fn mismatches_merge_and_cap_examples() {
        let example = || MismatchExample {
            session: 1,
            recipient: "a@b".into(),
            expected: ReplyClass::Accepted,
            reply: "550 5.7.1 no".into(),
        };
        let mut a = Mismatches::default();
        for _ in 0..8 {
            a.record(ReplyClass::Accepted, ReplyClass::OptedOut, example);
        }
        let mut b = Mismatches::default();
        for _ in 0..5 {
            b.record(ReplyClass::Unknown, ReplyClass::Accepted, example);
        }
        a.merge(&b);
        assert_eq!(a.total, 13);
        assert_eq!(a.by_class["accepted->opted_out"], 8);
        assert_eq!(a.by_class["unknown->accepted"], 5);
        assert_eq!(a.examples.len(), Mismatches::EXAMPLES);
    }
}
