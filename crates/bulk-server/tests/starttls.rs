//! STARTTLS (RFC 3207) over loopback TCP: the offer, the handshake, a BULK transaction
//! under TLS, plaintext pipelined after STARTTLS never executed, `--require-tls`'s 530,
//! and the deadlines, spool and shutdown working under TLS as they do in the clear.

mod common;

use std::time::Duration;

use bulk_server::{ServerConfig, SinkConfig};
use common::{Client, TestServer, tls};
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls;

/// A server offering STARTTLS (requiring it if `required`), and its certificate.
async fn tls_server(
    config: ServerConfig,
    required: bool,
) -> (TestServer, tls::CertificateDer<'static>) {
    let (tls, certificate) = tls::server(required);
    let config = ServerConfig {
        tls: Some(tls),
        ..config
    };
    (TestServer::start(config).await, certificate)
}

/// Whether an EHLO reply lists `keyword`.
fn offers(reply: &common::Reply, keyword: &str) -> bool {
    reply.lines.iter().any(|line| line == keyword)
}

/// Greeted, EHLO, STARTTLS, handshake: a client under TLS that has not sent EHLO again.
async fn under_tls(
    server: &TestServer,
    certificate: &tls::CertificateDer<'static>,
) -> Client<tls::ClientStream> {
    let mut client = Client::greeted(server.addr).await;
    let ehlo = client.command("EHLO client.example").await;
    assert!(offers(&ehlo, "STARTTLS"), "{ehlo:?}");
    assert_eq!(
        client.command("STARTTLS").await.text(),
        "220 2.0.0 Ready to start TLS"
    );
    client.starttls(certificate).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_then_a_bulk_transaction_under_tls() {
    let (server, certificate) = tls_server(ServerConfig::default(), false).await;
    let mut client = under_tls(&server, &certificate).await;
    // The session started over: no EHLO known, and the new EHLO offers no STARTTLS.
    assert_eq!(
        client
            .command("BULK FROM:<news@shop.example>")
            .await
            .codes(),
        "503 5.5.1"
    );
    let ehlo = client.command("EHLO client.example").await;
    assert!(
        !offers(&ehlo, "STARTTLS") && offers(&ehlo, "BULK"),
        "{ehlo:?}"
    );
    assert_eq!(
        client
            .command("BULK FROM:<news@shop.example>")
            .await
            .codes(),
        "250 2.1.0"
    );
    // Pipelined under TLS: one write, replies in order.
    client
        .send(b"RCPT TO:<ann@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n")
        .await;
    for expected in ["250 2.1.5", "550 5.7.1", "354 End"] {
        assert_eq!(client.reply().await.unwrap().codes(), expected);
    }
    client.send(b"Subject: hi\r\n\r\nunder TLS\r\n.\r\n").await;
    assert_eq!(client.reply().await.unwrap().codes(), "250 2.0.0");
    assert_eq!(
        client.command("STARTTLS").await.text(),
        "503 5.5.1 TLS already active"
    );
    client.quit().await;
    let stats = server.stop().await;
    assert_eq!((stats.tls_sessions, stats.tls_failed), (1, 0));
    assert_eq!((stats.messages, stats.starttls_discards), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_pipelined_after_starttls_is_discarded_never_executed() {
    let (server, certificate) = tls_server(ServerConfig::default(), false).await;
    // The attack of CVE-2011-0411: a man in the middle appends plaintext commands to the
    // client's STARTTLS, in the same packet, hoping the server runs them as if they had
    // come under TLS. Here a MAIL FROM and a NOOP (either answered would show).
    let mut client = Client::greeted(server.addr).await;
    client.set_nodelay();
    client.command("EHLO client.example").await;
    client
        .send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\nNOOP\r\n")
        .await;
    assert_eq!(client.reply().await.unwrap().codes(), "220 2.0.0");
    // Nothing else came in the clear (starttls asserts no unread byte is buffered).
    let mut client = client.starttls(&certificate).await;
    // The first reply under TLS is the reply to the first command sent under TLS, and the
    // smuggled MAIL FROM is not in effect.
    let ehlo = client.command("EHLO client.example").await;
    assert_eq!(ehlo.code, 250);
    assert!(offers(&ehlo, "BULK"), "{ehlo:?}");
    assert_eq!(
        client.command("RCPT TO:<ann@example.org>").await.text(),
        "503 5.5.1 Send MAIL FROM or BULK FROM first"
    );
    client.quit().await;
    let stats = server.stop().await;
    assert_eq!(stats.starttls_discards, 1);
    assert_eq!(stats.tls_sessions, 1);
    assert_eq!(stats.rcpts, 0, "no RCPT ever reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_sent_after_the_220_fails_the_handshake_and_is_not_executed() {
    let (server, _certificate) = tls_server(ServerConfig::default(), false).await;
    let mut client = Client::greeted(server.addr).await;
    client.command("EHLO client.example").await;
    assert_eq!(client.command("STARTTLS").await.codes(), "220 2.0.0");
    // Plaintext where the ClientHello should be: the handshake fails, the connection
    // closes, and no SMTP reply comes back.
    let mut stream = client.into_stream();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"MAIL FROM:<x@y.example>\r\nNOOP\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(common::WAIT, stream.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the server closes the connection");
    assert!(
        !seen.starts_with(b"250") && !seen.starts_with(b"5"),
        "an SMTP reply came back: {:?}",
        String::from_utf8_lossy(&seen)
    );
    let stats = server.stop().await;
    assert_eq!((stats.tls_sessions, stats.tls_failed), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_mail_and_bulk_until_starttls() {
    let (server, certificate) = tls_server(ServerConfig::default(), true).await;
    let mut client = Client::greeted(server.addr).await;
    let ehlo = client.command("EHLO client.example").await;
    assert!(offers(&ehlo, "STARTTLS"), "{ehlo:?}");
    for verb in ["MAIL", "BULK"] {
        assert_eq!(
            client
                .command(&format!("{verb} FROM:<news@shop.example>"))
                .await
                .text(),
            "530 5.7.0 Must issue a STARTTLS command first"
        );
    }
    assert_eq!(
        client.command("RCPT TO:<ann@example.org>").await.codes(),
        "503 5.5.1"
    );
    assert_eq!(client.command("STARTTLS").await.codes(), "220 2.0.0");
    let mut client = client.starttls(&certificate).await;
    client.command("EHLO client.example").await;
    assert_eq!(
        client
            .command("BULK FROM:<news@shop.example>")
            .await
            .codes(),
        "250 2.1.0"
    );
    assert_eq!(
        client.command("RCPT TO:<ann@example.org>").await.codes(),
        "250 2.1.5"
    );
    client.quit().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_refusals_by_configuration_and_syntax() {
    // Without TLS configured: not advertised, and 502 as Postfix answers.
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = Client::greeted(server.addr).await;
    let ehlo = client.command("EHLO client.example").await;
    assert!(!offers(&ehlo, "STARTTLS"), "{ehlo:?}");
    assert_eq!(
        client.command("STARTTLS").await.text(),
        "502 5.5.1 Command not implemented"
    );
    client.quit().await;
    server.stop().await;

    let (server, _certificate) = tls_server(ServerConfig::default(), false).await;
    let mut client = Client::greeted(server.addr).await;
    assert_eq!(
        client.command("STARTTLS now").await.text(),
        "501 5.5.4 Syntax error (no parameters allowed)"
    );
    // The session goes on in the clear.
    assert_eq!(client.command("NOOP").await.codes(), "250 2.0.0");
    client.quit().await;
    let stats = server.stop().await;
    assert_eq!(stats.tls_sessions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_clients_are_served_too() {
    let (server, certificate) = tls_server(ServerConfig::default(), false).await;
    let mut client = Client::greeted(server.addr).await;
    client.command("EHLO client.example").await;
    assert_eq!(client.command("STARTTLS").await.codes(), "220 2.0.0");
    let stream = tls::connect_with(
        client.into_stream(),
        &certificate,
        &[&rustls::version::TLS12],
    )
    .await
    .expect("a TLS 1.2 handshake");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let stats = server.stop().await;
    assert_eq!(stats.tls_sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_the_220_is_closed_at_the_line_deadline() {
    let config = ServerConfig {
        line_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let (server, _certificate) = tls_server(config, false).await;
    let mut client = Client::greeted(server.addr).await;
    assert_eq!(client.command("STARTTLS").await.codes(), "220 2.0.0");
    let started = tokio::time::Instant::now();
    let mut stream = client.into_stream();
    let mut seen = Vec::new();
    tokio::time::timeout(common::WAIT, stream.read_to_end(&mut seen))
        .await
        .expect("closed within the line timeout")
        .expect("a clean close");
    assert!(seen.is_empty(), "{seen:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let stats = server.stop().await;
    assert_eq!(stats.tls_failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_deadline_holds_under_tls() {
    let config = ServerConfig {
        line_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let (server, certificate) = tls_server(config, false).await;
    let mut client = under_tls(&server, &certificate).await;
    // A command line started and never finished.
    client.send(b"NOOP and then nothing").await;
    let reply = client.reply().await.expect("a 421 before the close");
    assert!(
        reply
            .text()
            .starts_with("421 4.4.2 localhost Error: command line not completed"),
        "{reply:?}"
    );
    assert_eq!(client.reply().await, None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_under_tls_streams_to_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        sink: SinkConfig::Spool(dir.path().to_owned()),
        ..ServerConfig::default()
    };
    let (server, certificate) = tls_server(config, false).await;
    let mut client = under_tls(&server, &certificate).await;
    client.command("EHLO client.example").await;
    client.command("BULK FROM:<news@shop.example>").await;
    client.command("RCPT TO:<ann@example.org>").await;
    assert_eq!(client.command("DATA").await.code, 354);
    // 300 KiB: several content chunks and many TLS records.
    let line = format!("{}\r\n", "x".repeat(98));
    let body = line.repeat(3_000);
    client.send(body.as_bytes()).await;
    client.send(b".\r\n").await;
    let reply = client.reply().await.unwrap();
    assert_eq!(reply.codes(), "250 2.0.0", "{reply:?}");
    let id = reply.text().rsplit(' ').next().unwrap().to_owned();
    let stored = std::fs::read(dir.path().join("new").join(&id)).expect("spooled before 250");
    assert!(stored.ends_with(body.as_bytes()));
    client.quit().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_an_idle_tls_session_with_421() {
    let (mut server, certificate) = tls_server(ServerConfig::default(), false).await;
    let mut client = under_tls(&server, &certificate).await;
    client.command("EHLO client.example").await;
    server.begin_shutdown();
    let reply = client.reply().await.expect("a 421 under TLS");
    assert_eq!(reply.codes(), "421 4.3.2");
    assert_eq!(client.reply().await, None);
    let stats = server.wait().await;
    assert_eq!(stats.tls_sessions, 1);
}
