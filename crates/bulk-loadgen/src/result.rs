//! What a run measured: merged histograms, counts by class, mismatches, errors by kind.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::Recorder;
use crate::verify::{Mismatches, ReplyClass};

/// Why a session failed. A failed session is data: counted by kind, the run goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Connection refused (nothing listening, or the backlog overflowed).
    ConnectRefused,
    /// Connect took longer than the connect timeout.
    ConnectTimeout,
    /// No local address or port for the connection (ephemeral ports exhausted:
    /// EADDRNOTAVAIL / EADDRINUSE).
    AddressUnavailable,
    /// Out of file descriptors (EMFILE / ENFILE).
    TooManyOpenFiles,
    /// Another connect failure.
    ConnectOther,
    /// A reply did not arrive within the command timeout.
    Timeout,
    /// The server closed the connection mid-session.
    Closed,
    /// The connection was reset.
    Reset,
    /// The server sent 421 and ended the session.
    ServerClosed421,
    /// A reply of the wrong class (greeting not 2xx, FROM refused, ...).
    UnexpectedReply,
    /// A STARTTLS session's server did not advertise STARTTLS in its EHLO reply.
    StarttlsNotOffered,
    /// STARTTLS answered with anything but 220.
    StarttlsRefused,
    /// The TLS handshake failed (an alert, a protocol error, no common version or cipher
    /// suite), or the server sent bytes after its 220 and before the handshake.
    TlsHandshake,
    /// With certificate checking on (`--tls-verify`): the server's certificate is not
    /// trusted, expired, or not for the target's name.
    TlsCertificate,
    /// DATA answered with a 4xx although a recipient was accepted.
    DataTempfail,
    /// DATA answered with neither 354 nor a 4xx although a recipient was accepted, or
    /// with 354 although none was.
    DataRefused,
    /// The end of the message answered with a 4xx.
    MessageTempfail,
    /// The end of the message answered with neither a 2xx nor a 4xx.
    MessageRefused,
    /// Bytes that are not an SMTP reply.
    Protocol,
    /// Another I/O error.
    Io,
}

impl ErrorKind {
    /// All kinds, in report order.
    pub const ALL: [ErrorKind; 20] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::AddressUnavailable,
        ErrorKind::TooManyOpenFiles,
        ErrorKind::ConnectOther,
        ErrorKind::Timeout,
        ErrorKind::Closed,
        ErrorKind::Reset,
        ErrorKind::ServerClosed421,
        ErrorKind::UnexpectedReply,
        ErrorKind::StarttlsNotOffered,
        ErrorKind::StarttlsRefused,
        ErrorKind::TlsHandshake,
        ErrorKind::TlsCertificate,
        ErrorKind::DataTempfail,
        ErrorKind::DataRefused,
        ErrorKind::MessageTempfail,
        ErrorKind::MessageRefused,
        ErrorKind::Protocol,
        ErrorKind::Io,
    ];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::AddressUnavailable => "address_unavailable",
            ErrorKind::TooManyOpenFiles => "too_many_open_files",
            ErrorKind::ConnectOther => "connect_other",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::Reset => "reset",
            ErrorKind::ServerClosed421 => "server_closed_421",
            ErrorKind::UnexpectedReply => "unexpected_reply",
            ErrorKind::StarttlsNotOffered => "starttls_not_offered",
            ErrorKind::StarttlsRefused => "starttls_refused",
            ErrorKind::TlsHandshake => "tls_handshake",
            ErrorKind::TlsCertificate => "tls_certificate",
            ErrorKind::DataTempfail => "data_tempfail",
            ErrorKind::DataRefused => "data_refused",
            ErrorKind::MessageTempfail => "message_tempfail",
            ErrorKind::MessageRefused => "message_refused",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Io => "io",
        }
    }

    fn from_os(error: &io::Error) -> Option<ErrorKind> {
        // Raw errno values of Linux, where these tests and benchmarks run.
        match error.raw_os_error() {
            Some(99) | Some(98) => Some(ErrorKind::AddressUnavailable), // EADDRNOTAVAIL, EADDRINUSE
            Some(24) | Some(23) => Some(ErrorKind::TooManyOpenFiles),   // EMFILE, ENFILE
            _ => None,
        }
    }

    /// The kind of an I/O error during a session.
    pub fn from_io(error: &io::Error) -> ErrorKind {
        if let Some(kind) = Self::from_os(error) {
            return kind;
        }
        match error.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
            io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        }
    }

    /// The kind of an error on a connection's first read, before anything was sent or
    /// received: the generator does not ask a new socket for its error (see
    /// `client::connect`), so a failed connect shows here. Nothing sent means nothing
    /// can time out but the handshake, so a timeout is the connect's; a reset or an end
    /// of input is the server's, after accepting.
    pub fn from_first_read(error: &io::Error) -> ErrorKind {
        match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => ErrorKind::from_io(error),
            _ => ErrorKind::from_connect_io(error),
        }
    }

    /// Whether the connection was never made: a session that failed so has no connect
    /// latency.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused
                | ErrorKind::ConnectTimeout
                | ErrorKind::AddressUnavailable
                | ErrorKind::TooManyOpenFiles
                | ErrorKind::ConnectOther
        )
    }

    /// The kind of an error of a TLS handshake: rustls's own errors say whether the
    /// certificate was refused or the handshake failed otherwise; an I/O error (the
    /// server closed or reset the connection) is counted as such.
    pub fn from_tls(error: &io::Error) -> ErrorKind {
        use tokio_rustls::rustls::Error as TlsError;
        match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<TlsError>())
        {
            Some(TlsError::InvalidCertificate(_)) => ErrorKind::TlsCertificate,
            Some(_) => ErrorKind::TlsHandshake,
            None if error.kind() == io::ErrorKind::InvalidData => ErrorKind::TlsHandshake,
            None => ErrorKind::from_io(error),
        }
    }

    /// The kind of an error while connecting.
    pub fn from_connect_io(error: &io::Error) -> ErrorKind {
        if let Some(kind) = Self::from_os(error) {
            return kind;
        }
        match error.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
            _ => ErrorKind::ConnectOther,
        }
    }
}

/// Counts of a run, or of its warm-up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Sessions started.
    pub sessions: u64,
    /// Sessions that ran to their QUIT reply.
    pub sessions_completed: u64,
    /// Sessions that failed, by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// RCPT replies received.
    pub rcpts: u64,
    /// RCPT replies by class.
    pub by_class: BTreeMap<ReplyClass, u64>,
    /// Messages accepted with 250 at the end of DATA.
    pub messages: u64,
    /// Sessions that wanted BULK but used MAIL FROM: the server did not advertise BULK.
    pub bulk_fallback_sessions: u64,
    /// Sessions that asked for STARTTLS (failed ones included).
    #[serde(default)]
    pub starttls_sessions: u64,
}

impl Totals {
    /// Adds another set of counts.
    pub fn merge(&mut self, other: &Totals) {
        self.sessions += other.sessions;
        self.sessions_completed += other.sessions_completed;
        for (kind, count) in &other.errors {
            *self.errors.entry(*kind).or_default() += count;
        }
        self.rcpts += other.rcpts;
        for (class, count) in &other.by_class {
            *self.by_class.entry(*class).or_default() += count;
        }
        self.messages += other.messages;
        self.bulk_fallback_sessions += other.bulk_fallback_sessions;
        self.starttls_sessions += other.starttls_sessions;
    }

    /// Failed sessions, all kinds.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Everything a run measured. The default is a run that measured nothing.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// Latencies of sessions that started after the warm-up.
    pub measured: Recorder,
    /// Latencies of warm-up sessions (reported apart, excluded from the figures).
    pub warmup: Recorder,
    /// Counts of measured sessions.
    pub totals: Totals,
    /// Counts of warm-up sessions.
    pub warmup_totals: Totals,
    /// RCPT replies that contradicted the population (warm-up included: a wrong answer is
    /// wrong whenever it comes).
    pub mismatches: Mismatches,
    /// From the end of the warm-up to the last completion: the window of the figures.
    pub window: Duration,
    /// From the first start to the last completion.
    pub elapsed: Duration,
    /// The run was stopped before its workload finished (Ctrl-C).
    pub interrupted: bool,
    /// Sessions of the workload started, by their place in it: a closed loop sized in time
    /// ran its first `drawn` sessions, which
    /// [`Workload::as_run`](bulk_population::Workload::as_run) replays.
    pub drawn: u64,
    /// The event loops (threads) that ran the sessions.
    pub event_loops: usize,
}

impl RunResult {
    /// Measured RCPT replies per second of the window.
    pub fn rcpt_per_sec(&self) -> f64 {
        per_sec(self.totals.rcpts, self.window)
    }

    /// Measured completed sessions per second of the window.
    pub fn sessions_per_sec(&self) -> f64 {
        per_sec(self.totals.sessions_completed, self.window)
    }
}

fn per_sec(count: u64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    #[test]
    fn a_first_read_error_is_the_connect_s_unless_the_server_ended_it() {
        use io::ErrorKind as Io;
        let first = |e: &io::Error| ErrorKind::from_first_read(e);
        assert_eq!(first(&of(Io::ConnectionRefused)), ErrorKind::ConnectRefused);
        // Nothing was sent yet: only the handshake can time out.
        assert_eq!(first(&of(Io::TimedOut)), ErrorKind::ConnectTimeout);
        assert_eq!(first(&of(Io::HostUnreachable)), ErrorKind::ConnectOther);
        assert_eq!(
            first(&io::Error::from_raw_os_error(99)),
            ErrorKind::AddressUnavailable
        );
        // The server accepted, then hung up: not a connect failure.
        assert_eq!(first(&of(Io::ConnectionReset)), ErrorKind::Reset);
        assert_eq!(first(&of(Io::UnexpectedEof)), ErrorKind::Closed);
        for kind in [Io::ConnectionRefused, Io::TimedOut, Io::HostUnreachable] {
            assert!(first(&of(kind)).is_connect(), "{kind:?}");
        }
        assert!(!ErrorKind::Reset.is_connect() && !ErrorKind::Timeout.is_connect());
        // Later in a session a timeout is the session's.
        assert_eq!(ErrorKind::from_io(&of(Io::TimedOut)), ErrorKind::Timeout);
    }
}
