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
