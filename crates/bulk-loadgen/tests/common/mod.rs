//! Harness for load generator tests: small scenarios, bulkbench's real server with a
//! chosen policy, and a scriptable plain SMTP server for the cases ours never produces.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bulk_policy::{AddressBatch, MemoryBackend, PolicyBackend, PolicyError, Verdict};
use bulk_population::{PopulationModel, Scenario, Workload};
use bulk_server::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A small scenario: `sessions` sessions, `concurrency` in flight (closed loop), or an
/// open loop at `rate` sessions/s when given.
pub fn scenario(sessions: u64, concurrency: u64, rate: Option<f64>) -> Scenario {
    let workload = match rate {
        Some(rate) => format!("mode = \"open\"\nrate_per_sec = {rate}\n"),
        None => format!("mode = \"closed\"\nconcurrency = {concurrency}\n"),
    };
    let text = format!(
        "name = \"test\"\nseed = 7\n\
         [population]\nmailboxes = 2000\ndomains = 20\n\
         [workload]\nsessions = {sessions}\n{workload}\
         recipients_min = 1\nrecipients_max = 20\nwarmup_secs = 0.0\ntimeout_ms = 5000\n\
         message_size_min = 200\nmessage_size_max = 2000\n"
    );
    Scenario::from_toml(&text, "test").expect("test scenario is valid")
}

/// Sessions of 2 to 5 transactions of 1 to 4 RCPTs each, some without a message (size 0
/// or no recipient accepted), pipelined or not: every way a transaction can end.
pub fn transactions_scenario(pipelining: bool) -> Scenario {
    let text = format!(
        "name = \"test\"\nseed = 11\n\
         [population]\nmailboxes = 2000\ndomains = 20\n\
         [workload]\nsessions = 120\nconcurrency = 8\n\
         transactions_min = 2\ntransactions_max = 5\n\
         recipients_min = 1\nrecipients_max = 4\nbulk_share = 0.8\n\
         message_size_min = 0\nmessage_size_max = 3\npipelining = {pipelining}\n\
         warmup_secs = 0.0\ntimeout_ms = 5000\n"
    );
    Scenario::from_toml(&text, "test").expect("test scenario is valid")
}

/// What the server's replies to a workload should add up to: transactions that deliver a
/// message (a size and an accepted recipient), and those followed by another without one
/// (each such is followed by RSET).
pub fn transaction_counts(workload: &Workload) -> (u64, u64) {
    let mut messages = 0;
    let mut resets = 0;
    for session in &workload.sessions {
        for (i, t) in session.transactions.iter().enumerate() {
            let accepted = t
                .recipients
                .iter()
                .any(|r| r.expected(t.kind) == bulk_policy::Verdict::Accept);
            let delivered = t.message_size > 0 && accepted;
            messages += u64::from(delivered);
            resets += u64::from(!delivered && i + 1 < session.transactions.len());
        }
    }
    (messages, resets)
}

pub struct Prepared {
    pub scenario: Scenario,
    pub model: PopulationModel,
    pub workload: Arc<Workload>,
}

pub fn prepare(scenario: Scenario) -> Prepared {
    let model = PopulationModel::new(&scenario.population, scenario.seed);
    let workload = Arc::new(Workload::generate(&scenario, &model));
    Prepared {
        scenario,
        model,
        workload,
    }
}

/// bulkbench's own server on 127.0.0.1:0 with `policy`; stops when the sender drops.
pub async fn start_server<P: PolicyBackend>(
    policy: P,
    config: ServerConfig,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = bulk_server::bind("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = bulk_server::run(listener, config, Arc::new(policy), async {
            let _ = stopped.await;
        })
        .await;
    });
    (addr, stop)
}

pub fn memory_backend(model: &PopulationModel) -> MemoryBackend {
    MemoryBackend::new(model.build())
}

/// A policy that answers one address wrongly: the oracle a mismatch test needs.
pub struct OneWrong {
    pub inner: MemoryBackend,
    pub address: String,
    pub verdict: Verdict,
}

impl PolicyBackend for OneWrong {
    fn name(&self) -> &'static str {
        "one-wrong"
    }
    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        let start = out.len();
        self.inner.lookup(batch, out).await?;
        for (i, address) in batch.iter().enumerate() {
            if address == self.address.as_bytes() {
                out[start + i] = self.verdict;
            }
        }
        Ok(())
    }
}

/// A policy that stalls every lookup made in [stall_at, stall_at + stall) until the
/// stall ends: the whole server pauses once, as under a GC pause or a failover.
pub struct StallOnce {
    pub inner: MemoryBackend,
    pub stall_at: tokio::time::Instant,
    pub stall: Duration,
}

impl PolicyBackend for StallOnce {
    fn name(&self) -> &'static str {
        "stall-once"
    }
    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        let now = tokio::time::Instant::now();
        let end = self.stall_at + self.stall;
        if now >= self.stall_at && now < end {
            tokio::time::sleep_until(end).await;
        }
        self.inner.lookup(batch, out).await
    }
}

/// How the plain server behaves.
#[derive(Clone, Copy, Debug)]
pub enum Plain {
    /// A correct ESMTP server that does not know BULK and accepts every recipient.
    NoBulk,
    /// Closes the connection after the first RCPT reply.
    CloseAfterFirstRcpt,
    /// Answers EHLO, then reads on but never answers again.
    SilentAfterEhlo,
    /// Waits this long before every reply line after the greeting.
    Slow(Duration),
    /// Accepts every recipient, then answers DATA with `451 4.3.0`.
    DataTempfail,
    /// Accepts every message's DATA, then refuses it at its end with `554 5.6.0`.
    MessageRefused,
}

/// A minimal line-based SMTP server for behaviours bulkbench's server never shows.
pub async fn start_plain(mode: Plain) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                if write.write_all(b"220 plain.test ESMTP\r\n").await.is_err() {
                    return;
                }
                let mut in_data = false;
                while let Ok(Ok(Some(line))) =
                    tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await
                {
                    let mut reply: &[u8] = if in_data {
                        if line == "." {
                            in_data = false;
                            if let Plain::MessageRefused = mode {
                                b"554 5.6.0 content refused\r\n"
                            } else {
                                b"250 2.0.0 queued\r\n"
                            }
                        } else {
                            continue;
                        }
                    } else {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        match verb.as_str() {
                            "EHLO" => b"250-plain.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                            _ if matches!(mode, Plain::SilentAfterEhlo) => continue,
                            "MAIL" => b"250 2.1.0 ok\r\n",
                            "BULK" => b"500 5.5.2 unknown command\r\n",
                            "RCPT" => {
                                if let Plain::CloseAfterFirstRcpt = mode {
                                    let _ = write.write_all(b"250 2.1.5 ok\r\n").await;
                                    return;
                                }
                                b"250 2.1.5 ok\r\n"
                            }
                            "DATA" if matches!(mode, Plain::DataTempfail) => {
                                b"451 4.3.0 try again later\r\n"
                            }
                            "DATA" => {
                                in_data = true;
                                b"354 go ahead\r\n"
                            }
                            "QUIT" => {
                                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                                return;
                            }
                            _ => b"250 2.0.0 ok\r\n",
                        }
                    };
                    if let Plain::Slow(delay) = mode {
                        tokio::time::sleep(delay).await;
                    }
                    if write.write_all(std::mem::take(&mut reply)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A recipient the workload sends exactly once, in a bulk session, that the population
/// accepts; and its session. Flipping its verdict makes exactly one mismatch.
pub fn lone_accepted_recipient(
    workload: &Workload,
) -> (&bulk_population::SessionSpec, &bulk_population::Recipient) {
    let mut counts = std::collections::HashMap::new();
    for session in &workload.sessions {
        for (_, r) in session.recipients() {
            *counts.entry(r.address.as_str()).or_insert(0) += 1;
        }
    }
    workload
        .sessions
        .iter()
        .flat_map(|s| s.transactions.iter().map(move |t| (s, t)))
        .filter(|(_, t)| t.kind == bulk_population::Kind::Bulk && t.recipients.len() <= 20)
        .flat_map(|(s, t)| t.recipients.iter().map(move |r| (s, r)))
        .find(|(_, r)| r.verdict == Verdict::Accept && counts[r.address.as_str()] == 1)
        .expect("an accepted recipient that occurs once")
}

/// Checks that `mismatches` holds exactly one mismatch, of `class` (`expected->actual`),
/// for `victim` in `session`, its reply starting with `reply`.
pub fn assert_the_one_mismatch(
    mismatches: &bulk_loadgen::Mismatches,
    session: &bulk_population::SessionSpec,
    victim: &bulk_population::Recipient,
    class: &str,
    reply: &str,
) {
    assert_eq!(mismatches.total, 1, "{mismatches:?}");
    assert_eq!(mismatches.by_class[class], 1, "{mismatches:?}");
    let example = &mismatches.examples[0];
    assert_eq!(example.session, session.index);
    assert_eq!(example.recipient, victim.address);
    assert!(example.reply.starts_with(reply), "{example:?}");
}
