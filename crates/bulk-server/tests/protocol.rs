//! The server over a raw socket: pipelining, line limits, bad bytes, sequences, DATA.

mod common;

use bulk_server::ServerConfig;
use common::{Client, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_pipelined_rcpts_in_one_write_get_thousand_replies_in_order() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = Client::greeted(server.addr).await;
    assert_eq!(client.command("EHLO c.example").await.code, 250);
    // Cycle through every verdict so an out-of-order reply would show.
    let rotation = [
        ("ann@example.org", "250 2.1.5"),
        ("bob@example.org", "550 5.7.1"),
        ("nobody@example.org", "550 5.1.1"),
        ("x@elsewhere.example", "554 5.7.1"),
        ("ERIN+tag@Example.NET", "550 5.7.1"),
    ];
    let mut batch = String::from("BULK FROM:<news@shop.example>\r\n");
    for i in 0..1000 {
        batch.push_str(&format!("RCPT TO:<{}>\r\n", rotation[i % rotation.len()].0));
    }
    batch.push_str("DATA\r\n");
    client.send(batch.as_bytes()).await;
    assert_eq!(client.reply().await.unwrap().codes(), "250 2.1.0");
    for i in 0..1000 {
        let reply = client.reply().await.expect("a reply per RCPT");
        assert_eq!(reply.codes(), rotation[i % rotation.len()].1, "RCPT #{i}");
    }
    assert_eq!(client.reply().await.unwrap().code, 354);
    client.send(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n").await;
    assert_eq!(client.reply().await.unwrap().codes(), "250 2.0.0");
    assert_eq!(client.reply().await.unwrap().codes(), "221 2.0.0");
    assert_eq!(client.reply().await, None, "closed after QUIT");
    drop(client);
    let stats = server.stop().await;
    assert_eq!(stats.rcpts, 1000);
    assert_eq!(stats.accepted, 200);
    assert_eq!(stats.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mostly_refused_bulk_session_is_never_cut_off_by_the_error_limit() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = Client::greeted(server.addr).await;
    client.command("EHLO c.example").await;
    let mut batch = String::from("BULK FROM:<news@shop.example>\r\n");
    for i in 0..1000 {
        // One accepted recipient in a hundred; the rest refused, unknown or foreign.
        let rcpt = match i % 100 {
            0 => "ann@example.org".to_owned(),
            n if n % 3 == 0 => format!("user{i}@example.org"),
            n if n % 3 == 1 => "carol@example.org".to_owned(),
            _ => format!("user{i}@elsewhere.example"),
        };
        batch.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
    }
    client.send(batch.as_bytes()).await;
    let mut accepted = 0;
    for _ in 0..1001 {
        let reply = client
            .reply()
            .await
            .expect("no 421: refusals are not errors");
        assert_ne!(reply.code, 421, "{reply:?}");
        accepted += usize::from(reply.codes() == "250 2.1.5");
    }
    assert_eq!(accepted, 10, "one recipient in a hundred");
    assert_eq!(client.command("DATA").await.code, 354);
    client.send(b"hi\r\n.\r\n").await;
    assert_eq!(client.reply().await.unwrap().codes(), "250 2.0.0");
    client.quit().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_lines_get_specific_replies_and_the_session_goes_on() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = Client::greeted(server.addr).await;
    let long = format!("NOOP {}\r\n", "x".repeat(2000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (long.into_bytes(), "500 5.5.2"),
        (b"NOOP\0\r\n".to_vec(), "500 5.5.2"),
        (b"HELO caf\xc3\xa9\r\n".to_vec(), "500 5.5.2"),
        (b"RCPT TO:<\xff@example.org>\r\n".to_vec(), "500 5.5.2"),
        (b"NOOP\n".to_vec(), "500 5.5.2"),
        (b"FROB x\r\n".to_vec(), "500 5.5.2"),
        (b"EXPN staff\r\n".to_vec(), "502 5.5.1"),
        (b"EHLO\r\n".to_vec(), "501 5.5.4"),
    ];
    for (line, expected) in &cases {
        client.send(line).await;
        let reply = client.reply().await.expect("a reply");
        assert_eq!(
            reply.codes(),
            *expected,
            "{:?}",
            String::from_utf8_lossy(&line[..line.len().min(40)])
        );
    }
    // Eight errors so far, two below the limit: the session still works.
    assert_eq!(client.command("NOOP").await.codes(), "250 2.0.0");
    client.quit().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_errors_and_bulk_after_helo() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = Client::greeted(server.addr).await;
    assert_eq!(
        client.command("BULK FROM:<a@shop.example>").await.codes(),
        "503 5.5.1"
    );
    assert_eq!(
        client.command("RCPT TO:<ann@example.org>").await.codes(),
        "503 5.5.1"
    );
    assert_eq!(client.command("HELO c.example").await.code, 250);
    assert_eq!(
        client.command("BULK FROM:<a@shop.example>").await.codes(),
        "503 5.5.1"
    );
    assert_eq!(client.command("DATA").await.codes(), "503 5.5.1");
    assert_eq!(
        client.command("MAIL FROM:<a@shop.example>").await.codes(),
        "250 2.1.0"
    );
    assert_eq!(
        client.command("MAIL FROM:<a@shop.example>").await.codes(),
        "503 5.5.1"
    );
    assert_eq!(client.command("DATA").await.codes(), "554 5.5.1");
    assert_eq!(
        client
            .command("MAIL FROM:<a@shop.example> SMTPUTF8")
            .await
            .codes(),
        "555 5.5.4"
    );
    assert_eq!(client.command("RSET").await.codes(), "250 2.0.0");
    assert_eq!(
        client.command("VRFY carol@example.org").await.codes(),
        "252 2.5.0"
    );
    assert_eq!(client.command("EHLO c.example").await.code, 250);
    assert_eq!(
        client
            .command("BULK FROM:<a@shop.example> SIZE=999999999999")
            .await
            .codes(),
        "552 5.3.4"
    );
    client.quit().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_in_data_never_ends_the_message_and_no_command_is_smuggled() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = Client::greeted(server.addr).await;
    client.command("EHLO c.example").await;
    client.command("MAIL FROM:<a@shop.example>").await;
    assert_eq!(client.command("RCPT TO:<ann@example.org>").await.code, 250);
    assert_eq!(client.command("DATA").await.code, 354);
    // A smuggling attempt: "\n.\n" then a second transaction inside the first message.
    client
        .send(b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x.example>\nRCPT TO:<dave@example.net>\nDATA\nsmuggled\n.\n")
        .await;
    // Nothing may be answered yet: the message has not ended.
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), client.reply()).await;
    assert!(
        early.is_err(),
        "server answered inside the message: {early:?}"
    );
    client.send(b"\r\n.\r\n").await;
    assert_eq!(client.reply().await.unwrap().codes(), "550 5.5.2");
    client.quit().await;
    let stats = server.stop().await;
    assert_eq!(stats.messages, 0);
    assert_eq!(
        stats.rcpts, 1,
        "the smuggled RCPT never reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_limits_are_answered_at_the_end_of_data() {
    let config = ServerConfig {
        session: bulk_proto::SessionConfig {
            max_message_size: 2000,
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = Client::greeted(server.addr).await;
    let ehlo = client.command("EHLO c.example").await;
    assert!(ehlo.lines.contains(&"SIZE 2000".to_owned()), "{ehlo:?}");
    assert!(ehlo.lines.contains(&"BULK".to_owned()), "{ehlo:?}");
    let bodies: [(String, &str); 3] = [
        (format!("{}\r\n.\r\n", "y".repeat(999)), "550 5.6.0"),
        (format!("{}\r\n.\r\n", "z\r\n".repeat(800)), "552 5.3.4"),
        ("fine\r\n.\r\n".to_owned(), "250 2.0.0"),
    ];
    for (body, expected) in &bodies {
        client.command("MAIL FROM:<a@shop.example>").await;
        client.command("RCPT TO:<ann@example.org>").await;
        assert_eq!(client.command("DATA").await.code, 354);
        client.send(body.as_bytes()).await;
        assert_eq!(client.reply().await.unwrap().codes(), *expected);
    }
    client.quit().await;
    assert_eq!(server.stop().await.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_in_the_middle_of_data_loses_nothing_that_was_acknowledged() {
    let server = TestServer::start(ServerConfig::default()).await;
    {
        let mut client = Client::greeted(server.addr).await;
        client.command("EHLO c.example").await;
        client.command("MAIL FROM:<a@shop.example>").await;
        client.command("RCPT TO:<ann@example.org>").await;
        assert_eq!(client.command("DATA").await.code, 354);
        client.send(b"Subject: half\r\n\r\nhalf a mess").await;
    } // dropped: the connection closes mid-DATA
    // The server is unharmed and serves the next client.
    let mut client = Client::greeted(server.addr).await;
    assert_eq!(client.command("NOOP").await.code, 250);
    client.quit().await;
    let stats = server.stop().await;
    assert_eq!(stats.messages, 0);
    assert_eq!(stats.connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_quit_the_server_closes_without_waiting_for_the_client() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = Client::greeted(server.addr).await;
    assert_eq!(client.command("QUIT").await.codes(), "221 2.0.0");
    assert_eq!(client.reply().await, None, "closed after QUIT");
    // The client still holds its socket open, yet its slot is free well within the
    // server's 2 s linger: the server did not wait for the client's close.
    let next = Client::admitted_within(server.addr, std::time::Duration::from_secs(1)).await;
    assert!(
        next.is_some(),
        "the slot stayed taken while the client held its socket"
    );
    drop((client, next));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_after_quit_gets_the_linger_and_the_221_arrives_intact() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let server = TestServer::start(ServerConfig::default()).await;
    // A raw socket, to tell a clean end (FIN) from a reset, which `Client` reads alike.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.ends_with(b"\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the greeting");
        received.extend_from_slice(&buf[..n]);
    }
    // Commands after QUIT (a client breaking RFC 2920's "QUIT ends a group"), more than
    // the server reads at once (4 KiB), so some are still in the kernel when the 221 has
    // gone out: closing then would reset the connection. The server lingers instead.
    let mut tail = b"QUIT\r\n".to_vec();
    tail.extend_from_slice(&b"NOOP\r\n".repeat(2000));
    stream.write_all(&tail).await.unwrap();
    received.clear();
    let end = loop {
        match tokio::time::timeout(common::WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Ok(Err(error)) => break Err(error.kind()),
            Err(_) => panic!("no end within {:?}", common::WAIT),
        }
    };
    assert_eq!(String::from_utf8_lossy(&received), "221 2.0.0 Bye\r\n");
    assert_eq!(end, Ok(()), "a reset instead of a clean close");
    drop(stream);
    server.stop().await;
}
