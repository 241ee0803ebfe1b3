//! Limits and lifetime: error flood, idle timeout, connection limit, many concurrent
//! sessions, harvest-resistant delays, graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use bulk_proto::{HarvestConfig, SessionConfig};
use bulk_server::ServerConfig;
use common::{Client, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_flood_gets_421_then_close() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = Client::greeted(server.addr).await;
    // Twenty bad commands in one write: ten answered, then 421 and close, the rest ignored.
    client.send("BOGUS\r\n".repeat(20).as_bytes()).await;
    let replies = client.replies_until_close().await;
    assert_eq!(replies.len(), 11, "{replies:?}");
    assert!(replies[..10].iter().all(|r| r.codes() == "500 5.5.2"));
    assert_eq!(replies[10].codes(), "421 4.7.0");
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_gets_421_4_4_2() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = Client::greeted(server.addr).await;
    client.command("EHLO c.example").await;
    let started = Instant::now();
    let replies = client.replies_until_close().await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].codes(), "421 4.4.2");
    assert!(started.elapsed() >= Duration::from_millis(250));
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_gets_421_4_3_2_as_its_greeting() {
    let config = ServerConfig {
        max_connections: 3,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::greeted(server.addr).await);
    }
    let mut over = Client::connect(server.addr).await;
    let replies = over.replies_until_close().await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].codes(), "421 4.3.2");
    // Once one leaves, a new client gets in.
    let mut leaving = held.pop().unwrap();
    leaving.command("QUIT").await;
    assert_eq!(leaving.reply().await, None);
    // After QUIT the server closes and frees the slot (its task may take a moment to end).
    drop(leaving);
    let admitted = Client::admitted_within(server.addr, common::WAIT).await;
    assert!(admitted.is_some(), "a freed slot is reused");
    drop(held);
    drop(admitted);
    let stats = server.stop().await;
    assert!(stats.refused_connections >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_bulk_sessions() {
    let server = TestServer::start(ServerConfig::default()).await;
    let addr = server.addr;
    // Open all thousand first so they really are concurrent, then run their sessions.
    let mut clients = Vec::with_capacity(1000);
    for _ in 0..1000 {
        clients.push(Client::greeted(addr).await);
    }
    let sessions = clients.into_iter().enumerate().map(|(i, mut client)| {
        tokio::spawn(async move {
            client.command("EHLO c.example").await;
            client.send(b"BULK FROM:<news@shop.example>\r\nRCPT TO:<ann@example.org>\r\nRCPT TO:<bob@example.org>\r\n").await;
            let from = client.reply().await.unwrap().codes();
            let ann = client.reply().await.unwrap().codes();
            let bob = client.reply().await.unwrap().codes();
            assert_eq!((from.as_str(), ann.as_str(), bob.as_str()), ("250 2.1.0", "250 2.1.5", "550 5.7.1"), "session {i}");
            assert_eq!(client.command("DATA").await.code, 354);
            client.send(b"hello\r\n.\r\n").await;
            assert_eq!(client.reply().await.unwrap().codes(), "250 2.0.0");
            client.quit().await;
        })
    });
    for session in sessions.collect::<Vec<_>>() {
        session.await.expect("session succeeded");
    }
    let stats = server.stop().await;
    assert_eq!(stats.connections, 1000);
    assert_eq!(stats.messages, 1000);
    assert_eq!(stats.rcpts, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvest_resistant_mode_hides_unknown_mailboxes_and_slows_probing() {
    let config = ServerConfig {
        session: SessionConfig {
            harvest: Some(HarvestConfig {
                unknown_threshold: 3,
            }),
            ..SessionConfig::default()
        },
        // Long enough that "not delayed" can be told from "delayed" on a busy machine.
        harvest_delay: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = Client::greeted(server.addr).await;
    client.command("EHLO c.example").await;
    client.command("BULK FROM:<probe@x.example>").await;
    let opted_out = client.command("RCPT TO:<carol@example.org>").await;
    let unknown = client.command("RCPT TO:<nobody@example.org>").await;
    assert_eq!(
        opted_out.text(),
        unknown.text(),
        "the answers must not tell them apart"
    );
    assert_eq!(unknown.codes(), "550 5.7.1");
    client.command("RCPT TO:<nobody2@example.org>").await;
    // Known refusals never add delay, even past... the threshold is not reached yet.
    let started = Instant::now();
    client.command("RCPT TO:<nobody3@example.org>").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "third unknown is not delayed"
    );
    // Three unknowns seen: every further RCPT is delayed, two of them by at least 2 s.
    let mut batch = String::new();
    for _ in 0..2 {
        batch.push_str("RCPT TO:<ann@example.org>\r\n");
    }
    let started = Instant::now();
    client.send(batch.as_bytes()).await;
    for _ in 0..2 {
        assert_eq!(client.reply().await.unwrap().codes(), "250 2.1.5");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    client.quit().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_sessions_at_once_and_lets_transactions_finish() {
    let config = ServerConfig {
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    };
    let mut server = TestServer::start(config).await;
    let addr = server.addr;
    let mut idle = Client::greeted(addr).await;
    idle.command("EHLO c.example").await;
    let mut busy = Client::greeted(addr).await;
    busy.command("EHLO c.example").await;
    busy.command("MAIL FROM:<a@shop.example>").await;
    busy.command("RCPT TO:<ann@example.org>").await;
    assert_eq!(busy.command("DATA").await.code, 354);

    server.begin_shutdown();
    let idle_replies = idle.replies_until_close().await;
    assert_eq!(idle_replies.len(), 1);
    assert_eq!(idle_replies[0].codes(), "421 4.3.2");
    // The listener is closed: no new session starts.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "listener still accepting");
    // The transaction in progress completes and is acknowledged, then the session ends.
    busy.send(b"still here\r\n.\r\n").await;
    assert_eq!(busy.reply().await.unwrap().codes(), "250 2.0.0");
    let rest = busy.replies_until_close().await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].codes(), "421 4.3.2");
    drop((idle, busy));
    let stats = server.wait().await;
    assert_eq!(stats.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_ends_a_stalled_transaction() {
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let mut server = TestServer::start(config).await;
    let mut stalled = Client::greeted(server.addr).await;
    stalled.command("EHLO c.example").await;
    stalled.command("MAIL FROM:<a@shop.example>").await;
    server.begin_shutdown();
    let started = Instant::now();
    let replies = stalled.replies_until_close().await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].codes(), "421 4.3.2");
    assert!(started.elapsed() >= Duration::from_millis(250));
    drop(stalled);
    server.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_421_the_server_lingers_for_a_client_that_may_still_be_sending() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = Client::greeted(server.addr).await;
    // Exactly the error limit, nothing after it: the input is empty when the 421 goes
    // out, yet unlike after QUIT the server does not just close, since a client this far
    // off may still be sending. It lingers, so the only slot stays taken meanwhile.
    client.send("BOGUS\r\n".repeat(10).as_bytes()).await;
    let replies = client.replies_until_close().await;
    assert_eq!(replies.last().unwrap().codes(), "421 4.7.0");
    let mut other = Client::connect(server.addr).await;
    assert_eq!(other.reply().await.unwrap().codes(), "421 4.3.2");
    drop((client, other));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_clients_that_keep_their_side_open() {
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let mut server = TestServer::start(config).await;
    // One session between transactions, one inside a transaction; neither client ever
    // closes or sends again.
    let mut idle = Client::greeted(server.addr).await;
    idle.command("EHLO c.example").await;
    let mut stalled = Client::greeted(server.addr).await;
    stalled.command("EHLO c.example").await;
    stalled.command("MAIL FROM:<a@shop.example>").await;
    let started = Instant::now();
    server.begin_shutdown();
    assert_eq!(idle.reply().await.unwrap().codes(), "421 4.3.2");
    assert_eq!(stalled.reply().await.unwrap().codes(), "421 4.3.2");
    let stats = server.wait().await;
    // The grace period (300 ms), then no wait for the clients' close: the server used to
    // linger 2 s on each such connection, and leave 2 s after the grace period.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1800), "{took:?}");
    assert_eq!(stats.connections, 2);
    drop((idle, stalled));
}
