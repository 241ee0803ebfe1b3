//! Sans-io SMTP with the BULK extension (draft-eriksson-bulk-email-00): bytes in, commands,
//! replies and session events out. No sockets, no runtime, no clock.
//!
//! - [`command`]: [`parse_command`] turns one command line into a [`Command`] (or the
//!   [`CommandError`] that says which reply to send); [`Command::encode`] writes one.
//! - [`reply`]: every [`Reply`] the server sends and its encoding.
//! - [`data`]: [`DataReceiver`], message content after `354` with dot-unstuffing.
//! - [`session`]: [`Session`], the server's state machine, with PIPELINING and batched
//!   recipient verdicts.
//! - [`client`]: [`parse_reply`], the client's reply parser (load generator, tests).
//!
//! The server and the load generator both build on these types; neither re-implements a
//! piece of the protocol.
//!
//! ```
//! use bulk_proto::{Event, ServerIdentity, Session, SessionConfig, Verdict};
//!
//! let mut session = Session::new(SessionConfig::default());
//! session.greet();
//! let input = b"EHLO client.example\r\nBULK FROM:<news@shop.example>\r\n\
//!               RCPT TO:<ann@example.org>\r\nRCPT TO:<bob@example.org>\r\n";
//! let (consumed, event) = session.advance(input);
//! assert_eq!((consumed, event), (input.len(), Event::NeedInput));
//! // Two RCPTs wait for one batched backend call.
//! assert_eq!(session.pending().len(), 2);
//! session.resolve(Ok(&[Verdict::Accept, Verdict::OptedOut]));
//! let mut out = Vec::new();
//! session.flush(&ServerIdentity::default(), &mut out);
//! let text = String::from_utf8(out).unwrap();
//! assert!(text.contains("250 BULK\r\n"));
//! assert!(text.ends_with("250 2.1.5 Recipient ok\r\n550 5.7.1 Recipient does not accept bulk mail\r\n"));
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod command;
pub mod data;
// Fuzz bodies shared by `fuzz/` and `cargo test` (tests/fuzz_corpus.rs); not API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod plain;
pub mod reply;
pub mod session;

pub use bulk_types::{AddressBatch, Verdict};
pub use client::{EnhancedCode, ReplyError, ServerReply, parse_reply};
pub use command::{
    Body, Command, CommandError, ForwardPath, MailParams, ReversePath, TransactionKind,
    parse_command,
};
pub use data::{DataReceiver, DataVerdict};
pub use reply::{Closing, QueueId, Reply, ServerIdentity, replies};
pub use session::{Event, HarvestConfig, Message, Session, SessionConfig, SessionHost, TlsPolicy};

/// Protocol limits (RFC 5321 section 4.5.3.1) and the defaults of configurable ones.
pub mod limits {
    /// A command line, CRLF included (RFC 5321 section 4.5.3.1.4).
    pub const MAX_COMMAND_LINE: usize = 512;
    /// A text line of message content, CRLF included (section 4.5.3.1.6).
    pub const MAX_TEXT_LINE: usize = 1000;
    /// A local part (section 4.5.3.1.1).
    pub const MAX_LOCAL_PART: usize = 64;
    /// A domain (section 4.5.3.1.2).
    pub const MAX_DOMAIN: usize = 255;
    /// A reverse- or forward-path, brackets and source route included (section 4.5.3.1.3).
    pub const MAX_PATH: usize = 256;
    /// Default RCPT commands per transaction (RFC 5321 asks for at least 100).
    pub const DEFAULT_MAX_RECIPIENTS: u32 = 1000;
    /// Default largest message: 10 MiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 10 * 1024 * 1024;
    /// Default most message content a session that keeps messages holds before handing
    /// it over (`SessionConfig::content_chunk`): 64 KiB.
    pub const DEFAULT_CONTENT_CHUNK: usize = 64 * 1024;
    /// Default protocol errors per session.
    pub const DEFAULT_MAX_ERRORS: u32 = 10;
}
