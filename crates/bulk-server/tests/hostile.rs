//! Hostile clients: slow command lines, slow message content, many connections from one
//! address. The server closes the slow ones within their deadlines, refuses one source's
//! connections past its share, and serves a legitimate client meanwhile.
//!
//! The deadlines are configured short (a second or so) and the idle timeout long (300 s),
//! so "closed by the deadline" and "never closed" are far apart: every bound below sits far
//! above the deadline and far below the idle timeout that the old server relied on (a
//! client sending a byte now and then restarted it forever).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bulk_server::ServerConfig;
use common::{Client, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Far above the deadlines of these tests, far below the idle timeout.
const CLOSED_WITHIN: Duration = Duration::from_secs(30);

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A server whose idle timeout never fires during a test.
fn patient() -> ServerConfig {
    ServerConfig {
        idle_timeout: Duration::from_secs(300),
        ..ServerConfig::default()
    }
}

/// Connects from `source` and returns the stream and its first line (the greeting or the
/// refusal).
async fn connect_from(addr: SocketAddr, source: IpAddr) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = tokio::time::timeout(common::WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && line.len() < 512 {
        let n = tokio::time::timeout(common::WAIT, stream.read(&mut byte))
            .await
            .expect("greeting in time")
            .expect("read the greeting");
        if n == 0 {
            break;
        }
        line.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// How a slow client ended.
#[derive(Debug)]
struct Dripped {
    /// Time from the first byte dripped to the server's close; `None`: still open when the
    /// client gave up (after `CLOSED_WITHIN`, or with nothing left to drip).
    closed_after: Option<Duration>,
    /// Everything the server sent meanwhile.
    said: String,
}

/// Sends `payload` one byte per `interval`, reading what the server says, until the server
/// closes the connection, the payload is spent or `CLOSED_WITHIN` has passed.
async fn drip(mut stream: TcpStream, payload: Vec<u8>, interval: Duration) -> Dripped {
    let started = Instant::now();
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    let mut next = 0;
    let mut tick = tokio::time::interval(interval);
    while started.elapsed() < CLOSED_WITHIN && next < payload.len() {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    return Dripped {
                        closed_after: Some(started.elapsed()),
                        said: String::from_utf8_lossy(&said).into_owned(),
                    };
                }
                Ok(n) => said.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                // A write after the server's close may fail; the read above sees the close.
                let _ = stream.write_all(&payload[next..next + 1]).await;
                next += 1;
            }
        }
    }
    Dripped {
        closed_after: None,
        said: String::from_utf8_lossy(&said).into_owned(),
    }
}

/// One whole session that delivers a message; panics if any step is refused.
async fn legitimate_session(client: &mut Client) {
    assert_eq!(client.command("EHLO legit.example").await.code, 250);
    let from = client.command("MAIL FROM:<legit@shop.example>").await;
    assert_eq!(from.codes(), "250 2.1.0");
    let rcpt = client.command("RCPT TO:<ann@example.org>").await;
    assert_eq!(rcpt.codes(), "250 2.1.5");
    assert_eq!(client.command("DATA").await.code, 354);
    client.send(b"Subject: legit\r\n\r\nhello\r\n.\r\n").await;
    assert_eq!(client.reply().await.unwrap().codes(), "250 2.0.0");
}

/// A command line that never ends within any test: far longer than what is dripped.
fn endless_line() -> Vec<u8> {
    let mut line = b"NOOP ".to_vec();
    line.resize(100_000, b'x');
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_command_lines_are_closed_at_the_line_deadline_and_free_their_slots() {
    let config = ServerConfig {
        max_connections: 50,
        line_timeout: Duration::from_secs(1),
        ..patient()
    };
    let server = TestServer::start(config).await;
    // Fifty slow clients from fifty addresses take every slot (no per-address limit can
    // help against them). Connected first, so that no deadline runs yet while the test
    // checks that the slots are taken.
    let mut streams = Vec::new();
    for i in 0..50 {
        let (stream, greeting) = connect_from(server.addr, loopback(10 + i)).await;
        assert!(greeting.starts_with("220 "), "client {i}: {greeting}");
        streams.push(stream);
    }
    let (_, refused) = connect_from(server.addr, loopback(200)).await;
    assert!(refused.starts_with("421 4.3.2 "), "{refused}");
    let slow: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(drip(stream, endless_line(), Duration::from_millis(50))))
        .collect();

    for (i, client) in slow.into_iter().enumerate() {
        let dripped = client.await.unwrap();
        let after = dripped.closed_after.unwrap_or_else(|| {
            panic!("slow client {i} still open after {CLOSED_WITHIN:?}: {dripped:?}")
        });
        assert!(
            dripped
                .said
                .contains("421 4.4.2 localhost Error: command line not completed in time"),
            "client {i} after {after:?}: {dripped:?}"
        );
    }
    // Their slots are free again: a legitimate client gets in and is served.
    let mut legit = Client::admitted_within(server.addr, common::WAIT)
        .await
        .expect("a legitimate client is admitted once the slow ones are closed");
    legitimate_session(&mut legit).await;
    legit.quit().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_share_of_slots_and_a_legitimate_client_is_served_meanwhile() {
    let config = ServerConfig {
        max_connections: 50,
        max_connections_per_ip: 10,
        ..patient()
    };
    let server = TestServer::start(config).await;
    // Fifty connections from one address: ten are served, forty are turned away at once.
    let mut held = Vec::new();
    let mut refusals = 0;
    for i in 0..50 {
        let (stream, first) = connect_from(server.addr, loopback(1)).await;
        if first.starts_with("220 ") {
            held.push(stream);
        } else {
            assert!(
                first.starts_with("421 4.7.0 localhost Too many connections from your address"),
                "connection {i}: {first}"
            );
            refusals += 1;
        }
    }
    assert_eq!((held.len(), refusals), (10, 40));
    // Another address is served while the ten are connected.
    let mut legit = Client::connect_from(server.addr, loopback(2)).await;
    assert_eq!(legit.reply().await.unwrap().code, 220);
    legitimate_session(&mut legit).await;
    legit.quit().await;
    // The ten are still served: the per-address limit, not a timeout, kept slots free.
    let mut first = held.swap_remove(0);
    first.write_all(b"NOOP\r\n").await.unwrap();
    let mut reply = [0u8; 64];
    let n = tokio::time::timeout(common::WAIT, first.read(&mut reply))
        .await
        .expect("reply in time")
        .unwrap();
    assert!(reply[..n].starts_with(b"250 "), "{:?}", &reply[..n]);
    // One leaves, and that address gets a slot again.
    drop(first);
    let admitted = tokio::time::timeout(common::WAIT, async {
        loop {
            let (stream, first) = connect_from(server.addr, loopback(1)).await;
            if first.starts_with("220 ") {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a freed per-address slot is reused");
    drop((admitted, held));
    let stats = server.stop().await;
    assert!(stats.refused_per_ip >= 40, "{stats:?}");
    assert_eq!(stats.refused_connections, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_line_sent_fast_is_cut_at_the_line_deadline() {
    let config = ServerConfig {
        line_timeout: Duration::from_secs(1),
        ..patient()
    };
    let server = TestServer::start(config).await;
    let (mut stream, greeting) = connect_from(server.addr, loopback(1)).await;
    assert!(greeting.starts_with("220 "));
    // The socket never goes quiet, so only a deadline checked before each wait ends it:
    // the over-long line is discarded as it comes, forever otherwise.
    let started = Instant::now();
    let block = [b'x'; 4096];
    let mut closed = false;
    while started.elapsed() < CLOSED_WITHIN {
        match tokio::time::timeout(common::WAIT, stream.write_all(&block)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => panic!("the server stopped reading without closing"),
        }
    }
    assert!(
        closed,
        "still open after {CLOSED_WITHIN:?} of an endless line"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_message_content_is_closed_at_the_data_deadline() {
    let config = ServerConfig {
        data_timeout: Duration::from_secs(1),
        min_data_rate: 1000,
        ..patient()
    };
    let server = TestServer::start(config).await;
    let mut slow = Client::connect_from(server.addr, loopback(1)).await;
    assert_eq!(slow.reply().await.unwrap().code, 220);
    slow.command("EHLO slow.example").await;
    slow.command("MAIL FROM:<slow@shop.example>").await;
    slow.command("RCPT TO:<ann@example.org>").await;
    assert_eq!(slow.command("DATA").await.code, 354);
    // 50 octets a second, against a minimum of 1,000: the 1 s the phase starts with is all
    // it gets, and a little.
    let dripped = drip(
        slow.into_stream(),
        vec![b'y'; 10_000],
        Duration::from_millis(20),
    )
    .await;
    assert!(dripped.closed_after.is_some(), "{dripped:?}");
    assert!(
        dripped
            .said
            .contains("421 4.4.2 localhost Error: message content arriving too slowly"),
        "{dripped:?}"
    );
    // Meanwhile and after, others are served.
    let mut legit = Client::connect_from(server.addr, loopback(2)).await;
    assert_eq!(legit.reply().await.unwrap().code, 220);
    legitimate_session(&mut legit).await;
    legit.quit().await;
    assert_eq!(server.stop().await.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_content_at_the_minimum_rate_outlasts_the_data_timeout() {
    let config = ServerConfig {
        data_timeout: Duration::from_secs(3),
        min_data_rate: 100,
        ..patient()
    };
    let server = TestServer::start(config).await;
    let mut client = Client::connect_from(server.addr, loopback(1)).await;
    assert_eq!(client.reply().await.unwrap().code, 220);
    client.command("EHLO steady.example").await;
    client.command("MAIL FROM:<steady@shop.example>").await;
    client.command("RCPT TO:<ann@example.org>").await;
    assert_eq!(client.command("DATA").await.code, 354);
    // 1,000 octets every 200 ms: 50 times the minimum rate, for 4 s, longer than the 3 s
    // the phase starts with. Each write earns 10 s (capped at 3 s from now), so only a
    // stall of 3 s between two writes could end it.
    let line = format!("{}\r\n", "z".repeat(998));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    for _ in 0..20 {
        tick.tick().await;
        client.send(line.as_bytes()).await;
    }
    client.send(b".\r\n").await;
    assert_eq!(client.reply().await.unwrap().codes(), "250 2.0.0");
    client.quit().await;
    server.stop().await;
}
