//! What a request is answered: which requests are judged, and each verdict's action.
//!
//! The actions are `serve`'s replies (docs/protocol.md, "Recipients"), as Postfix's access
//! actions `NNN text`, so a recipient is refused with the same code, enhanced code and
//! text whichever server it meets; Postfix puts `<address>: Recipient address rejected:`
//! before the text. Accepting is `DUNNO`, not `OK`: the policy service has no objection,
//! and the restrictions after it still run.
//!
//! | verdict | bulk transaction | other transaction |
//! |---|---|---|
//! | `Accept` | `DUNNO` | `DUNNO` |
//! | `OptedOut` | `550 5.7.1 Recipient does not accept bulk mail` | `DUNNO` |
//! | `UnknownMailbox` | `550 5.1.1 Mailbox unknown` | `550 5.1.1 Mailbox unknown` |
//! | `NotLocal` | `554 5.7.1 Relay access denied` | `554 5.7.1 Relay access denied` |
//! | the store failed or timed out | the unavailable action | the unavailable action |
//!
//! In a transaction that is not bulk, preferences do not apply (an opted-out recipient
//! still receives ordinary mail), but existence and relaying do, as under `serve`'s MAIL.

use bulk_policy::Verdict;
use bulk_proto::{Reply, replies};

use crate::bulk::BulkRule;
use crate::protocol::Request;

/// No objection: Postfix goes on with the next restriction.
pub const DUNNO: &str = "DUNNO";
/// A bulk transaction's recipient who does not accept bulk mail.
pub const OPTED_OUT: &str = fixed(replies::RCPT_OPTED_OUT);
/// No such mailbox in a served domain.
pub const UNKNOWN_MAILBOX: &str = fixed(replies::RCPT_UNKNOWN);
/// A domain not served here.
pub const NOT_LOCAL: &str = fixed(replies::RCPT_NOT_LOCAL);
/// `postmaster` (no domain) in a bulk transaction.
pub const POSTMASTER_NO_BULK: &str = fixed(replies::POSTMASTER_NO_BULK);
/// The default answer when the store fails or is too slow: a temporary refusal, unless a
/// later restriction refuses for good (Postfix's `DEFER_IF_PERMIT`; the reply is
/// `450 4.3.0`). Never a guessed verdict.
pub const DEFAULT_UNAVAILABLE: &str =
    "DEFER_IF_PERMIT 4.3.0 Recipient policy temporarily unavailable, try again later";

/// The line of one of `serve`'s fixed replies, as an access action.
const fn fixed(reply: Reply) -> &'static str {
    match reply {
        Reply::Fixed(line) => line,
        _ => panic!("not a fixed reply"),
    }
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement<'a> {
    /// Answer this action now, without a lookup.
    Answer(&'static str),
    /// Look `recipient` up, and answer [`action`] of its verdict.
    Lookup {
        /// The `recipient` attribute.
        recipient: &'a str,
        /// Whether the transaction is bulk ([`BulkRule::is_bulk`]).
        bulk: bool,
    },
}

/// Judges a request: only `request=smtpd_access_policy` at `protocol_state=RCPT` with a
/// recipient is looked up; everything else is `DUNNO`. `postmaster` without a domain is
/// answered as `serve` answers `<Postmaster>`: refused in a bulk transaction, accepted in
/// any other, without a lookup.
pub fn judge<'a>(request: &Request<'a>, rule: &BulkRule) -> Judgement<'a> {
    let is = |name, value: &str| {
        request
            .get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case(value))
    };
    if !is("request", "smtpd_access_policy") || !is("protocol_state", "RCPT") {
        return Judgement::Answer(DUNNO);
    }
    let recipient = match request.get("recipient") {
        Some(recipient) if !recipient.is_empty() => recipient,
        _ => return Judgement::Answer(DUNNO),
    };
    let bulk = rule.is_bulk(
        request.get("sender").unwrap_or_default(),
        request.get("client_address").unwrap_or_default(),
    );
    if recipient.eq_ignore_ascii_case("postmaster") {
        return Judgement::Answer(if bulk { POSTMASTER_NO_BULK } else { DUNNO });
    }
    Judgement::Lookup { recipient, bulk }
}

/// The action for a recipient's verdict (the table in the [module docs](self)).
pub fn action(verdict: Verdict, bulk: bool) -> &'static str {
    match verdict {
        Verdict::Accept => DUNNO,
        Verdict::OptedOut if bulk => OPTED_OUT,
        Verdict::OptedOut => DUNNO,
        Verdict::UnknownMailbox => UNKNOWN_MAILBOX,
        Verdict::NotLocal => NOT_LOCAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulk::SenderList;
    use crate::protocol::Decoder;

    fn judged(text: &str, rule: &BulkRule) -> Judgement<'static> {
        let mut decoder = Decoder::new();
        decoder.feed(text.as_bytes());
        let request = decoder.next_request().unwrap().unwrap();
        match judge(&request, rule) {
            Judgement::Answer(action) => Judgement::Answer(action),
            Judgement::Lookup { recipient, bulk } => Judgement::Lookup {
                recipient: recipient.to_owned().leak(),
                bulk,
            },
        }
    }

    #[test]
    fn only_rcpt_requests_are_looked_up() {
        let every = BulkRule::Every;
        let rcpt = "request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@b.test\n\
                    client_address=192.0.2.1\nrecipient=Ann@Example.org\n\n";
        assert_eq!(
            judged(rcpt, &every),
            Judgement::Lookup {
                recipient: "Ann@Example.org",
                bulk: true
            }
        );
        for other in [
            "request=smtpd_access_policy\nprotocol_state=DATA\nrecipient=ann@example.org\n\n",
            "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\n\n",
            "request=other\nprotocol_state=RCPT\nrecipient=ann@example.org\n\n",
            "protocol_state=RCPT\nrecipient=ann@example.org\n\n",
            "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=\n\n",
            "request=smtpd_access_policy\nprotocol_state=RCPT\n\n",
        ] {
            assert_eq!(judged(other, &every), Judgement::Answer(DUNNO), "{other}");
        }
        let listed = BulkRule::Listed {
            senders: SenderList::parse("shop.example\n").unwrap(),
            clients: Default::default(),
        };
        let from = |sender: &str, recipient: &str| {
            format!(
                "request=smtpd_access_policy\nprotocol_state=RCPT\nsender={sender}\n\
                 recipient={recipient}\n\n"
            )
        };
        assert_eq!(
            judged(&from("news@shop.example", "x@y"), &listed),
            Judgement::Lookup {
                recipient: "x@y",
                bulk: true
            }
        );
        assert_eq!(
            judged(&from("friend@home.test", "x@y"), &listed),
            Judgement::Lookup {
                recipient: "x@y",
                bulk: false
            }
        );
        assert_eq!(
            judged(&from("news@shop.example", "PostMaster"), &listed),
            Judgement::Answer(POSTMASTER_NO_BULK)
        );
        assert_eq!(
            judged(&from("friend@home.test", "postmaster"), &listed),
            Judgement::Answer(DUNNO)
        );
    }

    #[test]
    fn actions_are_serves_replies() {
        assert_eq!(OPTED_OUT, "550 5.7.1 Recipient does not accept bulk mail");
        assert_eq!(UNKNOWN_MAILBOX, "550 5.1.1 Mailbox unknown");
        assert_eq!(NOT_LOCAL, "554 5.7.1 Relay access denied");
        for (verdict, bulk, other) in [
            (Verdict::Accept, DUNNO, DUNNO),
            (Verdict::OptedOut, OPTED_OUT, DUNNO),
            (Verdict::UnknownMailbox, UNKNOWN_MAILBOX, UNKNOWN_MAILBOX),
            (Verdict::NotLocal, NOT_LOCAL, NOT_LOCAL),
        ] {
            assert_eq!(action(verdict, true), bulk, "{verdict:?}");
            assert_eq!(action(verdict, false), other, "{verdict:?}");
        }
        assert_eq!(crate::protocol::check_action(DEFAULT_UNAVAILABLE), Ok(()));
    }
}
