//! The vocabulary the BULK protocol and the policy stores share, so that neither depends
//! on the other: the RCPT addresses of one pipelined read ([`AddressBatch`]), and the
//! answer a store gives for each ([`Verdict`]). The protocol crate (`bulk-proto`) asks for
//! verdicts and turns them into replies; the store crates (`bulk-policy` and its backends)
//! give them.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod batch;

pub use batch::AddressBatch;

/// The answer to one RCPT of a bulk transaction (docs/protocol.md, "Replies", maps each to a
/// reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The recipient accepts bulk mail (`250 2.1.5`).
    Accept,
    /// The recipient exists but refuses bulk mail, by its own preference or its domain's
    /// opt-in regime (`550 5.7.1`).
    OptedOut,
    /// The domain is served here but has no such mailbox (`550 5.1.1`).
    UnknownMailbox,
    /// The domain is not served here, or the address has no lookup key (`554 5.7.1`, no
    /// relaying).
    NotLocal,
}
