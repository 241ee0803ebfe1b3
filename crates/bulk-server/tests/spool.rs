//! Spool mode: a message that got 250 is on disk, and a failed write never gets 250.

mod common;

use bulk_server::{ServerConfig, SinkConfig};
use common::{Client, TestServer};

async fn send_one(client: &mut Client, rcpts: &[&str]) -> common::Reply {
    client.command("BULK FROM:<news@shop.example>").await;
    for rcpt in rcpts {
        client.command(&format!("RCPT TO:<{rcpt}>")).await;
    }
    assert_eq!(client.command("DATA").await.code, 354);
    client
        .send(b"Subject: spooled\r\n\r\n..dot\r\nbody\r\n.\r\n")
        .await;
    client.reply().await.expect("end-of-data reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_is_on_disk_when_250_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        sink: SinkConfig::Spool(dir.path().to_owned()),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = Client::greeted(server.addr).await;
    client.command("EHLO c.example").await;
    let reply = send_one(
        &mut client,
        &["ann@example.org", "bob@example.org", "dave@example.net"],
    )
    .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let id = reply.text().rsplit(' ').next().unwrap().to_owned();
    // Read at once, before anything else happens on the connection.
    let stored = std::fs::read(dir.path().join("new").join(&id)).expect("spooled before 250");
    let stored = String::from_utf8(stored).unwrap();
    assert_eq!(
        stored,
        "Bulkbench-Kind: BULK\r\nBulkbench-Sender: <news@shop.example>\r\n\
         Bulkbench-Recipient: <ann@example.org>\r\nBulkbench-Recipient: <dave@example.net>\r\n\r\n\
         Subject: spooled\r\n\r\n.dot\r\nbody\r\n"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    client.quit().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_spool_write_answers_451_and_never_250() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        sink: SinkConfig::Spool(dir.path().to_owned()),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    // A greeting means the server runs and has prepared its spool.
    let mut client = Client::greeted(server.addr).await;
    // Break the spool after start: `tmp` becomes a file, so no message file can be
    // created in it (permissions would not stop root, which tests may run as).
    let tmp = dir.path().join("tmp");
    std::fs::remove_dir(&tmp).unwrap();
    std::fs::write(&tmp, b"not a directory").unwrap();
    client.command("EHLO c.example").await;
    let reply = send_one(&mut client, &["ann@example.org"]).await;
    assert_eq!(reply.codes(), "451 4.3.0");
    assert_eq!(
        std::fs::read_dir(dir.path().join("new")).unwrap().count(),
        0
    );
    // The transaction is over; the session goes on.
    assert_eq!(
        client.command("RCPT TO:<ann@example.org>").await.codes(),
        "503 5.5.1"
    );
    // Rename failure: `new` replaced by a file after the temporary file is written.
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let new = dir.path().join("new");
    std::fs::remove_dir(&new).unwrap();
    std::fs::write(&new, b"not a directory").unwrap();
    let reply = send_one(&mut client, &["ann@example.org"]).await;
    assert_eq!(reply.codes(), "451 4.3.0");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "temporary file cleaned up"
    );
    client.quit().await;
    assert_eq!(server.stop().await.messages, 0);
}

/// `count` dot-stuffed lines of varying length, and the content they unstuff to.
fn long_message(count: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut wire, mut content) = (Vec::new(), Vec::new());
    for i in 0..count {
        let line = format!(".line {i} {}\r\n", "abcdefghij".repeat(i % 9));
        wire.push(b'.');
        wire.extend_from_slice(line.as_bytes());
        content.extend_from_slice(line.as_bytes());
    }
    (wire, content)
}

/// The files in the spool's `sub` folder.
fn files_in(dir: &std::path::Path, sub: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join(sub))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

/// Polls until `done` holds, for at most `common::WAIT`; panics with `what` otherwise.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < common::WAIT, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_many_chunks_in_many_small_reads_is_spooled_byte_exact() {
    // Chunks of 1 KiB: the message is about 40 of them. With no message memory, no
    // connection gets a share of it and every read goes to the file as it comes.
    for message_memory in [64 * 1024 * 1024, 0] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            sink: SinkConfig::Spool(dir.path().to_owned()),
            message_memory,
            ..ServerConfig::default()
        };
        config.session.content_chunk = 1024;
        let server = TestServer::start(config).await;
        let mut client = Client::greeted(server.addr).await;
        client.set_nodelay();
        client.command("EHLO c.example").await;
        client.command("MAIL FROM:<big@shop.example>").await;
        client.command("RCPT TO:<ann@example.org>").await;
        assert_eq!(client.command("DATA").await.code, 354);
        let (wire, content) = long_message(600);
        assert!(content.len() > 30 * 1024, "{}", content.len());
        // Writes of 1 to 97 octets: many reads, split anywhere (mid-line, mid-CRLF, right
        // after a stuffing dot).
        let mut at = 0;
        for size in (1..=97).cycle() {
            if at == wire.len() {
                break;
            }
            let end = (at + size).min(wire.len());
            client.send(&wire[at..end]).await;
            at = end;
        }
        client.send(b".\r\n").await;
        let reply = client.reply().await.expect("end-of-data reply");
        assert_eq!(reply.codes(), "250 2.0.0", "memory {message_memory}");
        let id = reply.text().rsplit(' ').next().unwrap().to_owned();
        let stored = std::fs::read(dir.path().join("new").join(&id)).expect("spooled");
        let mut expected = b"Bulkbench-Kind: MAIL\r\nBulkbench-Sender: <big@shop.example>\r\n\
            Bulkbench-Recipient: <ann@example.org>\r\n\r\n"
            .to_vec();
        expected.extend_from_slice(&content);
        assert!(
            stored == expected,
            "memory {message_memory}: not byte-exact"
        );
        assert!(files_in(dir.path(), "tmp").is_empty());
        client.quit().await;
        assert_eq!(server.stop().await.messages, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_goes_to_disk_as_it_comes_and_an_aborted_data_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        sink: SinkConfig::Spool(dir.path().to_owned()),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = Client::greeted(server.addr).await;
    client.command("EHLO c.example").await;
    client.command("MAIL FROM:<big@shop.example>").await;
    client.command("RCPT TO:<ann@example.org>").await;
    assert_eq!(client.command("DATA").await.code, 354);
    // 1 MiB of a message that never ends: the server holds at most two 64 KiB chunks of
    // it, the rest is in its temporary file (the old server kept all of it in memory and
    // wrote nothing before the end).
    let line = format!("{}\r\n", "y".repeat(1022));
    for _ in 0..1024 {
        client.send(line.as_bytes()).await;
    }
    let tmp = dir.path().join("tmp");
    wait_until("a temporary file holding most of the content", || {
        files_in(dir.path(), "tmp")
            .iter()
            .any(|path| std::fs::metadata(path).is_ok_and(|m| m.len() >= 900 * 1024))
    })
    .await;
    // The client goes away in the middle of the message: its file goes too.
    drop(client);
    wait_until("the temporary file removed", || {
        std::fs::read_dir(&tmp).unwrap().count() == 0
    })
    .await;
    assert!(files_in(dir.path(), "new").is_empty());
    assert_eq!(server.stop().await.messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_at_its_end_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        sink: SinkConfig::Spool(dir.path().to_owned()),
        ..ServerConfig::default()
    };
    config.session.max_message_size = 100_000;
    config.session.content_chunk = 4096;
    let server = TestServer::start(config).await;
    let mut client = Client::greeted(server.addr).await;
    client.command("EHLO c.example").await;
    // Too big, and a bare LF: both refused at the end, after chunks were written.
    let too_big = format!("{}\r\n", "z".repeat(98)).repeat(2000);
    let bare_lf = format!(
        "{}bare\nLF\r\n",
        format!("{}\r\n", "z".repeat(98)).repeat(500)
    );
    for (content, refusal) in [(too_big, "552 5.3.4"), (bare_lf, "550 5.5.2")] {
        client.command("MAIL FROM:<big@shop.example>").await;
        client.command("RCPT TO:<ann@example.org>").await;
        assert_eq!(client.command("DATA").await.code, 354);
        client.send(content.as_bytes()).await;
        client.send(b".\r\n").await;
        assert_eq!(client.reply().await.unwrap().codes(), refusal);
        // The refusal is sent once the file is gone (removed before the reply's write).
        assert!(files_in(dir.path(), "tmp").is_empty(), "{refusal}");
    }
    assert!(files_in(dir.path(), "new").is_empty());
    client.quit().await;
    assert_eq!(server.stop().await.messages, 0);
}
