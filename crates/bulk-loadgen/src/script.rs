//! The client side of a session, sans-io: what to write next, which reply comes next and
//! how each reply is judged. The TCP client (`client.rs`) and `simulate` both drive it, so
//! they send the same bytes and check the same replies by construction.
//!
//! A driver loops: [`Script::take_write`] appends the next group of commands (if one is
//! due) and the driver sends it; [`Script::expecting`] names the phase of the next reply
//! (`None`: the session is over) and the driver reads it and hands it to
//! [`Script::on_reply`], which checks it, counts it and decides what comes next. A reply
//! is timed from the last write, except the greeting (from the connect).
//!
//! The dialogue: greeting, EHLO, for a session with `starttls` STARTTLS (RFC 3207: the
//! server must have advertised it; its 220, then the driver's TLS handshake, then EHLO
//! again, whose reply alone says what the server offers), then each transaction of the
//! session in turn: BULK FROM
//! (MAIL FROM for a MAIL transaction, or when the server does not advertise BULK), the
//! RCPTs, DATA and the message. Pipelined (when the session asks for it and the server
//! advertises PIPELINING, RFC 2920), FROM, the RCPTs and DATA go in one write; otherwise
//! one command per write, and DATA only once a recipient was accepted. A transaction that
//! sent no message is ended with RSET before the next one (in the next group when
//! pipelined). QUIT after the last.

use bulk_population::{Kind, SessionSpec, Transaction};
use bulk_proto::{Command, ForwardPath, MailParams, ReversePath, ServerReply, TransactionKind};

use crate::message::write_message;
use crate::record::Phase;
use crate::result::ErrorKind;
use crate::verify::{Mismatches, ReplyClass, Verifier};

/// What a session counted besides its latencies.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// RCPT replies received.
    pub rcpts: u64,
    /// RCPT replies by class, in [`ReplyClass::ALL`] order.
    pub by_class: [u64; 6],
    /// RCPT replies that contradicted the population.
    pub mismatches: Mismatches,
    /// The server did not advertise BULK: bulk transactions used MAIL FROM.
    pub bulk_fallback: bool,
    /// Messages accepted at their end of data.
    pub messages: u64,
    /// The session asked for STARTTLS.
    pub starttls: bool,
}

impl Counts {
    pub fn clear(&mut self) {
        *self = Counts::default();
    }
}

/// The reply the script waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Greeting,
    Ehlo,
    /// STARTTLS's 220.
    Starttls,
    /// Not a reply: the driver's TLS handshake ([`Script::on_handshake`]).
    Handshake,
    Rset,
    From,
    /// RCPT number `.0` of the current transaction.
    Rcpt(usize),
    Data,
    EndOfData,
    Quit,
    Done,
}

/// What the next write holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    None,
    Ehlo,
    /// STARTTLS, alone: RFC 3207 makes it the last command of a group, and the
    /// handshake follows its reply.
    Starttls,
    /// RSET alone (lock-step, before a transaction that follows one without a message).
    Rset,
    /// The transaction's opening: FROM, and when pipelined also RSET before it (if due),
    /// the RCPTs and DATA after it.
    Open,
    /// RCPT number `.0`, alone (lock-step).
    Rcpt(usize),
    Data,
    Message,
    Quit,
}

/// One session's client script. Borrowed from its spec; no allocation of its own.
pub(crate) struct Script<'a> {
    spec: &'a SessionSpec,
    verifier: &'a Verifier,
    helo: &'a [u8],
    stage: Stage,
    write: Write,
    /// The current transaction.
    transaction: usize,
    /// Recipients accepted in the current transaction.
    accepted: u32,
    /// The server advertised BULK, PIPELINING.
    bulk: bool,
    pipelined: bool,
    /// The previous transaction sent no message: RSET before the next one.
    rset_due: bool,
    /// The TLS handshake is done: the next EHLO's reply is the one that counts.
    secured: bool,
}

impl<'a> Script<'a> {
    /// The script of `spec`, waiting for the greeting. `helo` is the EHLO name.
    pub fn new(spec: &'a SessionSpec, verifier: &'a Verifier, helo: &'a [u8]) -> Self {
        Script {
            spec,
            verifier,
            helo,
            stage: Stage::Greeting,
            write: Write::None,
            transaction: 0,
            accepted: 0,
            bulk: false,
            pipelined: false,
            rset_due: false,
            secured: false,
        }
    }

    /// The phase of the reply expected next; `None` once the session is over.
    pub fn expecting(&self) -> Option<Phase> {
        Some(match self.stage {
            Stage::Greeting => Phase::Greeting,
            Stage::Ehlo => Phase::Ehlo,
            Stage::Starttls => Phase::Starttls,
            Stage::Handshake => Phase::TlsHandshake,
            Stage::Rset => Phase::Rset,
            Stage::From => Phase::From,
            Stage::Rcpt(_) => Phase::Rcpt,
            Stage::Data => Phase::Data,
            Stage::EndOfData => Phase::EndOfData,
            Stage::Quit => Phase::Quit,
            Stage::Done => return None,
        })
    }

    fn current(&self) -> Option<&'a Transaction> {
        self.spec.transactions.get(self.transaction)
    }

    /// Whether the current transaction is sent as BULK (false: MAIL).
    fn sends_bulk(&self) -> bool {
        self.current().is_some_and(|t| t.kind == Kind::Bulk) && self.bulk
    }

    /// Appends the next write to `out`, if one is due; returns whether one was.
    pub fn take_write(&mut self, out: &mut Vec<u8>) -> bool {
        let write = std::mem::replace(&mut self.write, Write::None);
        let Some(transaction) = self.current() else {
            return match write {
                Write::Ehlo => self.encode_ehlo(out),
                Write::Starttls => {
                    Command::StartTls.encode(out);
                    true
                }
                Write::Quit => {
                    Command::Quit.encode(out);
                    true
                }
                _ => false,
            };
        };
        let rcpt = |i: usize, out: &mut Vec<u8>| {
            if let Some(recipient) = transaction.recipients.get(i) {
                Command::Rcpt {
                    to: ForwardPath::Mailbox(recipient.address.as_bytes()),
                }
                .encode(out);
            }
        };
        match write {
            Write::None => return false,
            Write::Ehlo => return self.encode_ehlo(out),
            Write::Starttls => Command::StartTls.encode(out),
            Write::Rset => Command::Rset.encode(out),
            Write::Open => {
                if self.pipelined && self.rset_due {
                    Command::Rset.encode(out);
                }
                let with_data = transaction.message_size > 0;
                Command::Mail {
                    kind: if self.sends_bulk() {
                        TransactionKind::Bulk
                    } else {
                        TransactionKind::Mail
                    },
                    from: ReversePath::Mailbox(transaction.sender.as_bytes()),
                    params: MailParams {
                        size: with_data.then_some(u64::from(transaction.message_size)),
                        body: None,
                    },
                }
                .encode(out);
                if self.pipelined {
                    for i in 0..transaction.recipients.len() {
                        rcpt(i, out);
                    }
                    if with_data {
                        Command::Data.encode(out);
                    }
                }
            }
            Write::Rcpt(i) => rcpt(i, out),
            Write::Data => Command::Data.encode(out),
            Write::Message => write_message(self.spec.index, self.transaction, transaction, out),
            Write::Quit => Command::Quit.encode(out),
        }
        true
    }

    fn encode_ehlo(&self, out: &mut Vec<u8>) -> bool {
        Command::Ehlo { domain: self.helo }.encode(out);
        true
    }

    /// Takes the reply the script was expecting: checks it, counts it into `counts`, and
    /// moves on. An error ends the session (a 421, or a reply of the wrong class).
    pub fn on_reply(
        &mut self,
        reply: &ServerReply<'_>,
        counts: &mut Counts,
    ) -> Result<(), ErrorKind> {
        if reply.code == 421 {
            self.stage = Stage::Done;
            return Err(ErrorKind::ServerClosed421);
        }
        let result = self.advance(reply, counts);
        if result.is_err() {
            self.stage = Stage::Done;
        }
        result
    }

    fn advance(&mut self, reply: &ServerReply<'_>, counts: &mut Counts) -> Result<(), ErrorKind> {
        let code = reply.code;
        match self.stage {
            Stage::Greeting => {
                expect_class(code, 2)?;
                self.write = Write::Ehlo;
                self.stage = Stage::Ehlo;
            }
            Stage::Ehlo if self.spec.starttls && !self.secured => {
                expect_class(code, 2)?;
                // What this reply offers besides STARTTLS is forgotten (RFC 3207 section
                // 4.2): the EHLO after the handshake says it again.
                if !reply.has_keyword("STARTTLS") {
                    return Err(ErrorKind::StarttlsNotOffered);
                }
                self.write = Write::Starttls;
                self.stage = Stage::Starttls;
            }
            Stage::Starttls => {
                if code != 220 {
                    return Err(ErrorKind::StarttlsRefused);
                }
                self.stage = Stage::Handshake;
            }
            // The driver reports the handshake with `on_handshake`, never as a reply.
            Stage::Handshake => return Err(ErrorKind::Protocol),
            Stage::Ehlo => {
                expect_class(code, 2)?;
                self.bulk = reply.has_keyword("BULK");
                self.pipelined = self.spec.pipelining && reply.has_keyword("PIPELINING");
                counts.bulk_fallback =
                    !self.bulk && self.spec.transactions.iter().any(|t| t.kind == Kind::Bulk);
                self.open_transaction();
            }
            Stage::Rset => {
                expect_class(code, 2)?;
                self.rset_due = false;
                if !self.pipelined {
                    self.write = Write::Open;
                }
                self.stage = Stage::From;
            }
            Stage::From => {
                expect_class(code, 2)?;
                self.rset_due = false;
                self.accepted = 0;
                self.after_rcpt(None);
            }
            Stage::Rcpt(i) => {
                let actual = ReplyClass::of(code, reply.enhanced);
                counts.rcpts += 1;
                counts.by_class[ReplyClass::ALL
                    .iter()
                    .position(|c| *c == actual)
                    .unwrap_or(5)] += 1;
                if let Some(transaction) = self.current() {
                    let accepted = self.verifier.check_rcpt(
                        self.spec.index,
                        transaction,
                        self.sends_bulk(),
                        i,
                        actual,
                        || String::from_utf8_lossy(reply.raw).trim_end().to_owned(),
                        &mut counts.mismatches,
                    );
                    self.accepted += u32::from(accepted);
                }
                self.after_rcpt(Some(i));
            }
            Stage::Data => {
                // With a recipient accepted DATA must get 354, without one a refusal
                // (RFC 2920 section 3.1): a 354 with nothing to deliver is wrong too.
                match (code, self.accepted > 0) {
                    (354, true) => {
                        self.write = Write::Message;
                        self.stage = Stage::EndOfData;
                    }
                    (354, false) => return Err(ErrorKind::DataRefused),
                    (_, false) => self.close_transaction(false),
                    (400..=499, true) => return Err(ErrorKind::DataTempfail),
                    (_, true) => return Err(ErrorKind::DataRefused),
                }
            }
            Stage::EndOfData => match code {
                200..=299 => {
                    counts.messages += 1;
                    self.close_transaction(true);
                }
                400..=499 => return Err(ErrorKind::MessageTempfail),
                _ => return Err(ErrorKind::MessageRefused),
            },
            Stage::Quit => {
                expect_class(code, 2)?;
                self.stage = Stage::Done;
            }
            // A reply nobody asked for.
            Stage::Done => return Err(ErrorKind::Protocol),
        }
        Ok(())
    }

    /// The driver's TLS handshake, expected after STARTTLS's 220 (`expecting` is
    /// [`Phase::TlsHandshake`]), is done: EHLO again.
    pub fn on_handshake(&mut self) {
        if self.stage == Stage::Handshake {
            self.secured = true;
            self.write = Write::Ehlo;
            self.stage = Stage::Ehlo;
        }
    }

    /// After the FROM reply (`None`) or RCPT `i`'s: the next RCPT, DATA, or the end.
    fn after_rcpt(&mut self, done: Option<usize>) {
        let Some(transaction) = self.current() else {
            return;
        };
        let next = done.map_or(0, |i| i + 1);
        let with_data = transaction.message_size > 0;
        if next < transaction.recipients.len() {
            self.stage = Stage::Rcpt(next);
            if !self.pipelined {
                self.write = Write::Rcpt(next);
            }
        } else if with_data && self.pipelined {
            // DATA went with the group: its reply is next either way.
            self.stage = Stage::Data;
        } else if with_data && self.accepted > 0 {
            // Lock-step clients send DATA only when a recipient was accepted.
            self.write = Write::Data;
            self.stage = Stage::Data;
        } else {
            self.close_transaction(false);
        }
    }

    /// Ends the current transaction (`delivered`: with an accepted message) and opens the
    /// next, or says QUIT after the last.
    fn close_transaction(&mut self, delivered: bool) {
        self.transaction += 1;
        self.rset_due = !delivered;
        self.open_transaction();
    }

    fn open_transaction(&mut self) {
        if self.current().is_none() {
            self.write = Write::Quit;
            self.stage = Stage::Quit;
        } else if self.rset_due && !self.pipelined {
            self.write = Write::Rset;
            self.stage = Stage::Rset;
        } else {
            self.write = Write::Open;
            self.stage = if self.rset_due {
                Stage::Rset
            } else {
                Stage::From
            };
        }
    }
}

/// A reply of the wrong class ends the session.
fn expect_class(code: u16, first_digit: u16) -> Result<(), ErrorKind> {
    if code / 100 == first_digit {
        Ok(())
    } else {
        Err(ErrorKind::UnexpectedReply)
    }
}

#[cfg(test)]
mod tests {
    use bulk_policy::Verdict;
    use bulk_population::Recipient;

    use super::*;
    use crate::verify::{Expectations, VerifyMode};

    fn spec(starttls: bool) -> SessionSpec {
        SessionSpec {
            index: 0,
            start_offset_us: 0,
            pipelining: true,
            transactions: vec![Transaction {
                kind: Kind::Bulk,
                sender: "news@shop.test".into(),
                recipients: vec![Recipient {
                    address: "ann@a.example".into(),
                    verdict: Verdict::Accept,
                }],
                message_size: 0,
            }],
            starttls,
        }
    }

    const VERIFIER: Verifier = Verifier {
        expectations: Expectations {
            max_recipients: 100,
            harvest_resistant: false,
            preferences_apply_to_all: false,
        },
        mode: VerifyMode::Strict,
    };

    const FULL_EHLO: &[u8] = b"250-mx.test\r\n250-PIPELINING\r\n250-BULK\r\n250 STARTTLS\r\n";

    /// Feeds `reply`, after taking the write due first; returns that write.
    fn step(script: &mut Script<'_>, reply: &[u8]) -> (String, Result<(), ErrorKind>) {
        let mut out = Vec::new();
        script.take_write(&mut out);
        let (reply, _) = bulk_proto::parse_reply(reply).unwrap().unwrap();
        let result = script.on_reply(&reply, &mut Counts::default());
        (String::from_utf8(out).unwrap(), result)
    }

    #[test]
    fn a_starttls_session_says_ehlo_again_over_tls_and_forgets_what_came_before() {
        let spec = spec(true);
        let mut script = Script::new(&spec, &VERIFIER, b"client.test");
        assert_eq!(script.expecting(), Some(Phase::Greeting));
        assert_eq!(
            step(&mut script, b"220 mx.test\r\n"),
            (String::new(), Ok(()))
        );
        assert_eq!(script.expecting(), Some(Phase::Ehlo));
        let (write, result) = step(&mut script, FULL_EHLO);
        assert_eq!((write.as_str(), result), ("EHLO client.test\r\n", Ok(())));
        assert_eq!(script.expecting(), Some(Phase::Starttls));
        let (write, result) = step(&mut script, b"220 2.0.0 go ahead\r\n");
        assert_eq!((write.as_str(), result), ("STARTTLS\r\n", Ok(())));
        // The handshake is the driver's: nothing to write, no reply to read.
        assert_eq!(script.expecting(), Some(Phase::TlsHandshake));
        assert!(!script.take_write(&mut Vec::new()));
        script.on_handshake();
        assert_eq!(script.expecting(), Some(Phase::Ehlo));
        // Over TLS the server offers neither PIPELINING nor BULK: what the first EHLO
        // offered is forgotten (RFC 3207 section 4.2), so MAIL FROM, in lock-step.
        let (write, result) = step(&mut script, b"250-mx.test\r\n250 8BITMIME\r\n");
        assert_eq!((write.as_str(), result), ("EHLO client.test\r\n", Ok(())));
        let mut out = Vec::new();
        assert!(script.take_write(&mut out));
        assert_eq!(out, b"MAIL FROM:<news@shop.test>\r\n");
    }

    #[test]
    fn starttls_not_offered_or_refused_ends_the_session_with_its_own_kind() {
        let tls = spec(true);
        let mut script = Script::new(&tls, &VERIFIER, b"client.test");
        step(&mut script, b"220 mx.test\r\n").1.unwrap();
        let no_tls = b"250-mx.test\r\n250-PIPELINING\r\n250 BULK\r\n";
        assert_eq!(
            step(&mut script, no_tls).1,
            Err(ErrorKind::StarttlsNotOffered)
        );
        assert_eq!(script.expecting(), None);

        let mut script = Script::new(&tls, &VERIFIER, b"client.test");
        step(&mut script, b"220 mx.test\r\n").1.unwrap();
        step(&mut script, FULL_EHLO).1.unwrap();
        assert_eq!(
            step(&mut script, b"454 4.7.0 TLS not available\r\n").1,
            Err(ErrorKind::StarttlsRefused)
        );
        assert_eq!(script.expecting(), None);

        // A session without TLS ignores the keyword: its transaction follows EHLO.
        let plain = spec(false);
        let mut script = Script::new(&plain, &VERIFIER, b"client.test");
        step(&mut script, b"220 mx.test\r\n").1.unwrap();
        step(&mut script, FULL_EHLO).1.unwrap();
        assert_eq!(script.expecting(), Some(Phase::From));
        let mut out = Vec::new();
        script.take_write(&mut out);
        assert!(out.starts_with(b"BULK FROM:<news@shop.test>"), "{out:?}");
    }
}
