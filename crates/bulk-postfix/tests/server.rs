//! The policy server over loopback TCP, on backends that answer, fail, hang or miscount:
//! what each request is answered, and how connections end.

use std::sync::Arc;
use std::time::Duration;

use bulk_policy::{
    AddressBatch, MemoryBackend, NormalizeConfig, PolicyBackend, PolicyError, Population, Verdict,
};
use bulk_postfix::BulkRule;
use bulk_postfix::policy::{DEFAULT_UNAVAILABLE, DUNNO, OPTED_OUT};
use bulk_postfix::server::{self, PolicydConfig, PolicydStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A backend that misbehaves in one way.
enum Broken {
    /// Every lookup fails.
    Fails,
    /// No lookup ever ends.
    Hangs,
    /// Answers two verdicts for one address.
    Miscounts,
}

impl PolicyBackend for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }

    async fn lookup(&self, _: &AddressBatch, out: &mut Vec<Verdict>) -> Result<(), PolicyError> {
        match self {
            Broken::Fails => Err(PolicyError::Unavailable {
                backend: "broken",
                reason: "down for the test".into(),
            }),
            Broken::Hangs => std::future::pending().await,
            Broken::Miscounts => {
                out.extend([Verdict::Accept, Verdict::Accept]);
                Ok(())
            }
        }
    }
}

fn config() -> PolicydConfig {
    PolicydConfig {
        rule: BulkRule::Every,
        unavailable_action: DEFAULT_UNAVAILABLE.to_owned(),
        policy_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(30),
        max_connections: 100,
    }
}

/// A running server, its address, and the switch that stops it.
struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<PolicydStats>,
}

async fn start<P: PolicyBackend>(config: PolicydConfig, policy: P) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run(listener, config, Arc::new(policy), async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

impl Running {
    async fn stop(self) -> PolicydStats {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap()
    }
}

/// A RCPT request for `recipient`.
fn rcpt(recipient: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
         client_address=192.0.2.1\nsender=news@shop.test\nrecipient={recipient}\n\n"
    )
}

/// Sends `request`, returns the action of the response.
async fn ask(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0];
    while !response.ends_with(b"\n\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("a response in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed after {:?}",
            String::from_utf8_lossy(&response)
        );
        response.push(byte[0]);
    }
    let text = String::from_utf8(response).unwrap();
    text.strip_prefix("action=")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not a response: {text:?}"))
        .to_owned()
}

/// Reads until the server closes the connection; panics if it does not within 10 s.
async fn closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_slow_or_miscounting_store_gets_the_unavailable_action() {
    for broken in [Broken::Fails, Broken::Hangs, Broken::Miscounts] {
        let running = start(config(), broken).await;
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        assert_eq!(
            ask(&mut stream, &rcpt("ann@example.org")).await,
            DEFAULT_UNAVAILABLE
        );
        // Requests that need no lookup are still answered.
        assert_eq!(
            ask(
                &mut stream,
                "request=smtpd_access_policy\nprotocol_state=DATA\n\n"
            )
            .await,
            DUNNO
        );
        drop(stream);
        let stats = running.stop().await;
        assert_eq!(
            (stats.requests, stats.lookups, stats.unavailable),
            (2, 1, 1)
        );
    }
    let custom = PolicydConfig {
        unavailable_action: "451 4.3.0 Try again later".to_owned(),
        ..config()
    };
    let running = start(custom, Broken::Fails).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    assert_eq!(
        ask(&mut stream, &rcpt("ann@example.org")).await,
        "451 4.3.0 Try again later"
    );
    drop(stream);
    running.stop().await;
}

fn memory() -> MemoryBackend {
    let text = "@example.org\topt-out\nann@example.org\tin\nbob@example.org\tout\n";
    MemoryBackend::new(Population::parse(text.as_bytes(), NormalizeConfig::default()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_on_one_connection_and_a_malformed_one_ends_it() {
    let running = start(config(), memory()).await;
    let mut other = TcpStream::connect(running.addr).await.unwrap();
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    // Two requests in one write are answered in order.
    let both = rcpt("ann@example.org") + &rcpt("bob@example.org");
    stream.write_all(both.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    while received.windows(2).filter(|w| w == b"\n\n").count() < 2 {
        let mut chunk = [0; 256];
        let n = stream.read(&mut chunk).await.unwrap();
        assert_ne!(n, 0);
        received.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        String::from_utf8(received).unwrap(),
        format!("action={DUNNO}\n\naction={OPTED_OUT}\n\n")
    );
    stream
        .write_all(b"recipient ann@example.org\n\n")
        .await
        .unwrap();
    closed(&mut stream).await;
    // The other connection is untouched.
    assert_eq!(ask(&mut other, &rcpt("Ann+x@EXAMPLE.org")).await, DUNNO);
    drop(other);
    let stats = running.stop().await;
    assert_eq!(
        (stats.connections, stats.requests, stats.malformed),
        (2, 3, 1)
    );
    assert_eq!((stats.accepted, stats.opted_out), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_shutdown_closes_idle_ones() {
    let limited = PolicydConfig {
        max_connections: 1,
        ..config()
    };
    let running = start(limited, memory()).await;
    let mut first = TcpStream::connect(running.addr).await.unwrap();
    // Answered: the first connection holds the only permit.
    assert_eq!(ask(&mut first, &rcpt("bob@example.org")).await, OPTED_OUT);
    let mut second = TcpStream::connect(running.addr).await.unwrap();
    closed(&mut second).await;
    // The idle first connection is closed by the shutdown, and the server returns.
    let stats = running.stop().await;
    closed(&mut first).await;
    assert_eq!((stats.connections, stats.refused_connections), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_time_out() {
    let quick = PolicydConfig {
        idle_timeout: Duration::from_millis(200),
        ..config()
    };
    let running = start(quick, memory()).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    // Half a request, then nothing: closed after the idle timeout.
    stream
        .write_all(b"request=smtpd_access_policy\n")
        .await
        .unwrap();
    closed(&mut stream).await;
    running.stop().await;
}
