//! Recipient preferences for Postfix, which has no BULK verb: the same verdicts and reply
//! codes as `bulkbench serve`, through Postfix's own extension points.
//!
//! # Overview
//!
//! - [`protocol`]: the SMTPD access policy delegation protocol (`check_policy_service`),
//!   sans-io: a [`Decoder`] fed bytes in any pieces hands out checked [`Request`]s, with
//!   limits on line length, attribute count and request size; [`encode_response`].
//! - [`bulk`]: which transactions are bulk ([`BulkRule`]): every one, or those from listed
//!   senders ([`SenderList`]) or client networks ([`ClientList`]).
//! - [`policy`]: which requests are judged ([`judge`]) and each verdict's action
//!   ([`action`]): `DUNNO`, or `serve`'s refusal as `550 5.7.1 text`.
//! - [`server`]: the policy server on tokio over any
//!   [`PolicyBackend`](bulk_policy::PolicyBackend), one lookup per request.
//! - [`access`]: a population written as a `check_recipient_access` table
//!   ([`write_table`]), for preferences that apply to all mail, without a policy server.
//!
//! How to configure Postfix for either: README.md, section "Postfix".
//!
//! # Example
//!
//! ```
//! use bulk_policy::Verdict;
//! use bulk_postfix::{BulkRule, Decoder, Judgement, action, encode_response, judge};
//!
//! let mut decoder = Decoder::new();
//! decoder.feed(b"request=smtpd_access_policy\nprotocol_state=RCPT\n");
//! assert!(decoder.next_request()?.is_none()); // not complete yet
//! decoder.feed(b"sender=news@shop.example\nrecipient=bob@example.org\n\n");
//! let request = decoder.next_request()?.expect("a complete request");
//!
//! let Judgement::Lookup { recipient, bulk } = judge(&request, &BulkRule::Every) else {
//!     unreachable!("a RCPT request is looked up");
//! };
//! assert_eq!((recipient, bulk), ("bob@example.org", true));
//! // ... the backend says bob opted out:
//! let mut out = Vec::new();
//! encode_response(action(Verdict::OptedOut, bulk), &mut out);
//! assert_eq!(out, b"action=550 5.7.1 Recipient does not accept bulk mail\n\n");
//! # Ok::<(), bulk_postfix::ProtocolError>(())
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod access;
pub mod bulk;
pub mod policy;
pub mod protocol;
pub mod server;

pub use access::write_table;
pub use bulk::{BulkRule, ClientList, ListError, SenderList};
pub use policy::{Judgement, action, judge};
pub use protocol::{Decoder, ProtocolError, Request, encode_response};
pub use server::{PolicydConfig, PolicydStats};
