//! The drivers the criterion benches and the instruction-count workloads
//! (`src/bin/icount.rs`) share, so that they measure the same code path: the server's RCPT
//! path through [`Session::feed`] with the memory backend as its host ([`FullPath`]), and
//! one batched backend lookup polled once ([`lookup_now`]) on a batch refilled as a session
//! fills its pending batch ([`fill`]).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bulk_policy::{AddressBatch, MemoryBackend, PolicyBackend, Verdict};
use bulk_proto::{Event, ServerIdentity, Session, SessionConfig, SessionHost};

/// Opens a BULK transaction on a fresh session.
pub const OPEN: &[u8] = b"EHLO bench.example\r\nBULK FROM:<news@shop.example>\r\n";
/// Re-opens the transaction between runs: RSET ends the previous one, and the session keeps
/// its buffers, as a long-lived connection does.
pub const REOPEN: &[u8] = b"RSET\r\nBULK FROM:<news@shop.example>\r\n";

/// One connection's session and buffers, reused from run to run.
pub struct FullPath<'a> {
    session: Session,
    backend: &'a MemoryBackend,
    identity: ServerIdentity,
    /// The verdicts of the last run's lookups.
    pub verdicts: Vec<Verdict>,
    /// The replies of the last run.
    pub out: Vec<u8>,
    scratch: Vec<u8>,
}

impl<'a> FullPath<'a> {
    /// A greeted session after `EHLO` and `BULK FROM:`, taking up to `max_recipients` RCPTs
    /// per transaction.
    pub fn new(backend: &'a MemoryBackend, max_recipients: u32) -> Self {
        let mut session = Session::new(SessionConfig {
            max_recipients,
            ..SessionConfig::default()
        });
        session.greet();
        let mut path = FullPath {
            session,
            backend,
            identity: ServerIdentity::default(),
            verdicts: Vec::new(),
            out: Vec::new(),
            scratch: Vec::new(),
        };
        path.feed(OPEN);
        assert!(path.scratch.ends_with(b"250 2.1.0 Sender ok\r\n"));
        path
    }

    /// Feeds commands that are answered at once and discards their replies.
    pub fn feed(&mut self, commands: &[u8]) {
        let (consumed, event) = self.session.advance(commands);
        assert_eq!((consumed, event), (commands.len(), Event::NeedInput));
        self.scratch.clear();
        self.session.flush(&self.identity, &mut self.scratch);
    }

    /// `iters` runs over `stream`, each after an untimed `RSET` + `BULK FROM:` that reopens
    /// the transaction; the sum of `clock`'s advance across the runs alone.
    pub fn time_runs(
        &mut self,
        stream: &[u8],
        iters: u64,
        clock: impl Fn() -> Duration,
    ) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            self.feed(REOPEN);
            let start = clock();
            self.run(black_box(stream));
            total += clock() - start;
            black_box(&self.out);
        }
        total
    }

    /// What a connection does with one read of RCPTs: the server's own loop
    /// ([`Session::feed`]) with the memory backend as its host, then the replies flushed
    /// into [`out`](Self::out).
    #[inline(never)]
    pub fn run(&mut self, stream: &[u8]) {
        let FullPath {
            session,
            backend,
            identity,
            verdicts,
            out,
            ..
        } = self;
        let mut host = MemoryHost { backend, verdicts };
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(consumed) = pin!(session.feed(stream, &mut host)).poll(&mut cx) else {
            panic!("the memory backend's lookup was not ready at its first poll");
        };
        assert_eq!(consumed, stream.len());
        out.clear();
        session.flush(identity, out);
    }

    /// [`run`](Self::run) with the verdicts given instead of looked up: parser, state
    /// machine and reply encoder only.
    #[inline(never)]
    pub fn run_without_lookup(&mut self, stream: &[u8], verdicts: &[Verdict]) {
        let (consumed, event) = self.session.advance(stream);
        assert!(consumed == stream.len() && event == Event::NeedInput);
        self.session.resolve(Ok(verdicts));
        self.out.clear();
        self.session.flush(&self.identity, &mut self.out);
    }
}

/// The session's host in the full path: the memory backend, answering at once.
struct MemoryHost<'a> {
    backend: &'a MemoryBackend,
    verdicts: &'a mut Vec<Verdict>,
}

impl SessionHost for MemoryHost<'_> {
    async fn resolve(&mut self, session: &mut Session) {
        self.verdicts.clear();
        self.backend
            .lookup(session.pending(), self.verdicts)
            .await
            .expect("the memory backend does not fail");
        session.resolve(Ok(self.verdicts));
    }

    async fn deliver(&mut self, session: &mut Session) {
        session.delivered(Ok(bulk_proto::QueueId(0)));
    }
}

/// One batched lookup, polled once with a no-op waker: every embedded backend is `Ready`
/// at once (the lookups run on the calling thread). Panics on a failure or a wait.
#[inline]
pub fn lookup_now<B: PolicyBackend>(backend: &B, batch: &AddressBatch, out: &mut Vec<Verdict>) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut lookup = pin!(backend.lookup(batch, out));
    match lookup.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(error)) => panic!("{} lookup failed: {error}", backend.name()),
        Poll::Pending => panic!("{} lookup not ready at its first poll", backend.name()),
    }
}

/// Refills `batch` with the `size` addresses of `from` starting at `start` (`clear` +
/// `push`, as a session fills its pending batch from a read).
#[inline]
pub fn fill(batch: &mut AddressBatch, from: &AddressBatch, start: usize, size: usize) {
    batch.clear();
    for i in start..start + size {
        batch.push(from.get(i).expect("in the pool"));
    }
}
