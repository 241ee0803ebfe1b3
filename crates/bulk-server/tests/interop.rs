//! Real SMTP clients against the real server over loopback TCP: Python's standard smtplib
//! for a bulk session that meets every verdict, and the lettre crate for ordinary mail.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bulk_policy::{AddressBatch, PolicyBackend, PolicyError, Verdict};
use bulk_proto::SessionConfig;
use bulk_server::ServerConfig;
use common::TestServer;
use serde_json::Value;

/// Runs the smtplib script against `port` with `plan`; returns its JSON report.
fn smtplib_session(port: u16, plan: Value) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/smtplib_session.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(plan.to_string())
        .output()
        .expect("python3 runs (it is on every machine this project supports)");
    assert!(
        output.status.success(),
        "smtplib session failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("script prints JSON")
}

/// "550 5.7.1" from {"code": 550, "text": "5.7.1 ..."}.
fn codes(reply: &Value) -> String {
    let text = reply["text"].as_str().unwrap_or_default();
    format!(
        "{} {}",
        reply["code"],
        text.split(' ').next().unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_bulk_session_meets_every_verdict() {
    let config = ServerConfig {
        session: SessionConfig {
            max_recipients: 7,
            ..SessionConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let port = server.addr.port();
    let rows = [
        ("ann@example.org", "250 2.1.5"),        // opted in, opt-in domain
        ("bob@example.org", "550 5.7.1"),        // no preference, opt-in domain
        ("Carol+news@EXAMPLE.org", "550 5.7.1"), // opted out; case and +tag normalized
        ("dave@example.net", "250 2.1.5"),       // no preference, opt-out domain
        ("nobody@example.org", "550 5.1.1"),     // unknown mailbox
        ("x@elsewhere.example", "554 5.7.1"),    // not served here
        ("frank@example.net", "250 2.1.5"),      // opted in, opt-out domain
        ("ann@example.org", "452 4.5.3"),        // beyond the recipient limit of 7
    ];
    let plan = serde_json::json!({
        "verb": "BULK",
        "sender": "news@shop.example",
        "rcpts": rows.iter().map(|(rcpt, _)| *rcpt).collect::<Vec<_>>(),
        "message": "Subject: offer\r\n\r\nHello.\r\n",
    });
    let report = tokio::task::spawn_blocking(move || smtplib_session(port, plan))
        .await
        .unwrap();
    assert_eq!(report["bulk_advertised"], true, "{report}");
    assert_eq!(report["size_advertised"], true, "{report}");
    assert_eq!(codes(&report["from"]), "250 2.1.0");
    for (i, (rcpt, expected)) in rows.iter().enumerate() {
        assert_eq!(
            codes(&report["rcpts"][i]),
            *expected,
            "RCPT {rcpt}: {report}"
        );
    }
    assert_eq!(codes(&report["data"]), "250 2.0.0", "{report}");
    assert_eq!(codes(&report["quit"]), "221 2.0.0");
    let stats = server.stop().await;
    assert_eq!(stats.messages, 1);
    assert_eq!(stats.rcpts, 7, "the 452 never reaches the backend");
}

/// A policy store that is down.
struct Unavailable;

impl PolicyBackend for Unavailable {
    fn name(&self) -> &'static str {
        "unavailable"
    }
    async fn lookup(&self, _: &AddressBatch, _: &mut Vec<Verdict>) -> Result<(), PolicyError> {
        Err(PolicyError::Unavailable {
            backend: "unavailable",
            reason: "connection refused".into(),
        })
    }
}

/// A policy store that answers too late.
struct Slow;

impl PolicyBackend for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        out.extend(std::iter::repeat_n(Verdict::Accept, batch.len()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_sees_451_when_the_backend_fails_or_times_out() {
    let config = ServerConfig {
        policy_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    for server in [
        TestServer::start_with(config.clone(), Arc::new(Unavailable)).await,
        TestServer::start_with(config.clone(), Arc::new(Slow)).await,
    ] {
        let port = server.addr.port();
        let plan = serde_json::json!({
            "verb": "BULK", "sender": "news@shop.example",
            "rcpts": ["ann@example.org", "dave@example.net"], "message": "x\r\n",
        });
        let report = tokio::task::spawn_blocking(move || smtplib_session(port, plan))
            .await
            .unwrap();
        assert_eq!(codes(&report["rcpts"][0]), "451 4.3.0", "{report}");
        assert_eq!(codes(&report["rcpts"][1]), "451 4.3.0", "{report}");
        // No recipient was accepted, so no message can be.
        assert_eq!(codes(&report["data"]), "554 5.5.1", "{report}");
        let stats = server.stop().await;
        assert_eq!(stats.tempfail, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_sends_ordinary_mail_to_an_opted_out_mailbox() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let server = TestServer::start(ServerConfig::default()).await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr.port())
        .timeout(Some(Duration::from_secs(10)))
        .build();
    // carol opted out of bulk mail, which never stops ordinary mail.
    let message = Message::builder()
        .from("Shop <orders@shop.example>".parse().unwrap())
        .to("Carol <carol@example.org>".parse().unwrap())
        .to("dave@example.net".parse().unwrap())
        .subject("Your order")
        .body(String::from("Shipped.\r\n.leading dot survives\r\n"))
        .unwrap();
    let response = transport.send(message).await.expect("lettre delivers");
    assert_eq!(u16::from(response.code()), 250);
    assert!(
        response
            .message()
            .any(|line| line.starts_with("2.0.0 Ok: queued as")),
        "{response:?}"
    );
    // An unknown mailbox is refused even for ordinary mail.
    let unknown = Message::builder()
        .from("orders@shop.example".parse().unwrap())
        .to("nobody@example.org".parse().unwrap())
        .body(String::from("x"))
        .unwrap();
    let error = transport
        .send(unknown)
        .await
        .expect_err("unknown mailbox refused");
    assert!(error.is_permanent(), "{error:?}");
    let stats = server.stop().await;
    assert_eq!(stats.messages, 1);
    assert_eq!(stats.opted_out, 1);
    assert_eq!(stats.unknown, 1);
}
