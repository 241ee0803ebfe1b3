//! SMTP clients that are not ours against the real `bulkbench serve`, in the clear and with
//! STARTTLS: Python's standard smtplib (`starttls()`), swaks, and Postfix's load client
//! `smtp-source`.
//!
//! swaks comes from Debian's `swaks`, smtp-source from `postfix`. A missing one shows its
//! test as ignored, naming the package; with `BULKBENCH_REQUIRE_EXTERNAL=1` (as CI runs) it
//! fails instead. So these tests run under libtest-mimic (`harness = false`). Python 3 is
//! required on every machine the project supports: its test is an ordinary one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

mod common;

use common::Server;

type Outcome = Result<Completion, Failed>;

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "smtplib_starttls_bulk_session_and_require_tls",
            smtplib_starttls,
        ),
        Trial::ignorable_test(
            "swaks_plain_starttls_and_require_tls_sessions",
            swaks_sessions,
        ),
        Trial::ignorable_test("smtp_source_sends_plain_sessions", smtp_source),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn example_population() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios/example-population.tsv")
        .display()
        .to_string()
}

/// `bulkbench serve` on the example population with `flags`, its log read.
fn serve(flags: &[&str]) -> Server {
    let population = example_population();
    let mut args = vec!["--population", population.as_str()];
    args.extend(flags);
    common::serve_logged(&args)
}

/// Stops `server` with SIGTERM and returns its `server stopped` log line.
fn stop(mut server: Server) -> String {
    common::signal(&server.child, 15);
    let log = server.log.take().expect("a logged server").all();
    log.lines()
        .find(|line| line.contains("server stopped"))
        .unwrap_or_else(|| panic!("no `server stopped` line:\n{log}"))
        .to_owned()
}

/// The port of a server's `IP:PORT`.
fn port(server: &Server) -> &str {
    server.addr.rsplit_once(':').expect("IP:PORT").1
}

/// Runs the bulk-server crate's smtplib script against `server` with `plan`.
fn smtplib(server: &Server, plan: serde_json::Value) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bulk-server/tests/python/smtplib_session.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(port(server))
        .arg(plan.to_string())
        .output()
        .expect("python3 runs (it is on every machine this project supports)");
    assert!(
        output.status.success(),
        "smtplib session failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// "550 5.7.1" from {"code": 550, "text": "5.7.1 ..."}.
fn codes(reply: &serde_json::Value) -> String {
    let text = reply["text"].as_str().unwrap_or_default();
    let enhanced = text.split(' ').next().unwrap_or_default();
    format!("{} {enhanced}", reply["code"])
}

/// smtplib's `starttls()` (any certificate accepted) against `serve --tls self-signed`, a
/// BULK transaction under TLS; and `--require-tls` refusing smtplib's BULK without it.
fn smtplib_starttls() -> Result<(), Failed> {
    let server = serve(&["--tls", "self-signed"]);
    let report = smtplib(
        &server,
        serde_json::json!({
            "verb": "BULK",
            "sender": "news@shop.example",
            "rcpts": ["ann@example.org", "carol@example.org", "nobody@example.org"],
            "message": "Subject: under TLS\r\n\r\nHello.\r\n",
            "starttls": true,
        }),
    );
    assert_eq!(report["starttls_advertised"], true, "{report}");
    assert_eq!(codes(&report["starttls"]), "220 2.0.0", "{report}");
    assert_eq!(report["starttls_advertised_under_tls"], false, "{report}");
    assert_eq!(report["bulk_advertised"], true, "{report}");
    assert_eq!(codes(&report["from"]), "250 2.1.0", "{report}");
    let rcpts: Vec<String> = (0..3).map(|i| codes(&report["rcpts"][i])).collect();
    assert_eq!(rcpts, ["250 2.1.5", "550 5.7.1", "550 5.1.1"], "{report}");
    assert_eq!(codes(&report["data"]), "250 2.0.0", "{report}");
    assert_eq!(codes(&report["quit"]), "221 2.0.0", "{report}");
    let stopped = stop(server);
    assert!(stopped.contains("messages=1"), "{stopped}");
    assert!(stopped.contains("tls_sessions=1"), "{stopped}");

    let server = serve(&["--tls", "self-signed", "--require-tls"]);
    let plan = |starttls| {
        serde_json::json!({
            "verb": "BULK", "sender": "news@shop.example", "rcpts": ["ann@example.org"],
            "message": null, "starttls": starttls,
        })
    };
    let refused = smtplib(&server, plan(false));
    assert_eq!(codes(&refused["from"]), "530 5.7.0", "{refused}");
    assert_eq!(codes(&refused["rcpts"][0]), "503 5.5.1", "{refused}");
    let accepted = smtplib(&server, plan(true));
    assert_eq!(codes(&accepted["from"]), "250 2.1.0", "{accepted}");
    assert_eq!(codes(&accepted["rcpts"][0]), "250 2.1.5", "{accepted}");
    stop(server);
    Ok(())
}

/// swaks, or `None` when it is not installed.
fn swaks(server: &Server, args: &[&str]) -> Option<Output> {
    let output = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", port(server)])
        .args(["--ehlo", "client.example", "--from", "news@shop.example"])
        .args(["--timeout", "10"])
        .args(args)
        .output();
    match output {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => panic!("swaks: {error}"),
    }
}

/// swaks' transcript (it writes the session to standard output).
fn transcript(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// swaks as a client of `serve --tls self-signed`: in the clear, with STARTTLS (and
/// pipelining), a refused recipient; then against `--require-tls`, without and with TLS.
/// swaks speaks MAIL, not BULK: preferences are not consulted, existence is.
fn swaks_sessions() -> Outcome {
    let server = serve(&["--tls", "self-signed"]);
    let Some(plain) = swaks(&server, &["--to", "ann@example.org"]) else {
        return common::missing("swaks", "apt-get install swaks");
    };
    let text = transcript(&plain);
    assert!(plain.status.success(), "{text}");
    assert!(text.contains("<-  250-STARTTLS"), "{text}");
    assert!(text.contains("<-  250 2.0.0 Ok: queued as "), "{text}");

    let tls = swaks(
        &server,
        &["--to", "carol@example.org", "--tls", "--pipeline"],
    )
    .unwrap();
    let text = transcript(&tls);
    assert!(tls.status.success(), "{text}");
    assert!(text.contains("<-  220 2.0.0 Ready to start TLS"), "{text}");
    assert!(text.contains("=== TLS started with cipher "), "{text}");
    // Under TLS swaks marks lines `~>` and `<~`: the EHLO there offers no STARTTLS.
    assert!(text.contains("<~  250 BULK"), "{text}");
    assert!(!text.contains("<~  250-STARTTLS"), "{text}");
    assert!(text.contains("<~  250 2.0.0 Ok: queued as "), "{text}");

    let refused = swaks(&server, &["--to", "nobody@example.org", "--tls"]).unwrap();
    let text = transcript(&refused);
    assert!(!refused.status.success(), "{text}");
    // An error reply under TLS is marked `<~*`.
    assert!(text.contains("<~* 550 5.1.1 Mailbox unknown"), "{text}");
    let stopped = stop(server);
    assert!(stopped.contains("messages=2"), "{stopped}");
    assert!(stopped.contains("tls_sessions=2"), "{stopped}");

    let server = serve(&["--tls", "self-signed", "--require-tls"]);
    let plain = swaks(&server, &["--to", "ann@example.org"]).unwrap();
    let text = transcript(&plain);
    assert!(!plain.status.success(), "{text}");
    assert!(
        text.contains("<** 530 5.7.0 Must issue a STARTTLS command first"),
        "{text}"
    );
    let tls = swaks(&server, &["--to", "ann@example.org", "--tls"]).unwrap();
    let text = transcript(&tls);
    assert!(tls.status.success(), "{text}");
    assert!(text.contains("<~  250 2.0.0 Ok: queued as "), "{text}");
    let stopped = stop(server);
    assert!(stopped.contains("messages=1"), "{stopped}");
    Ok(Completion::Completed)
}

/// Postfix's smtp-source: found on the PATH, or in /usr/sbin, where Debian puts it (and
/// which an unprivileged user's PATH may lack).
fn smtp_source_program() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("smtp-source"))
            .find(|program| program.is_file())
    });
    on_path.or_else(|| {
        let program = Path::new("/usr/sbin/smtp-source");
        program.is_file().then(|| program.to_owned())
    })
}

/// Postfix's load client: 20 messages over 4 concurrent sessions, plain SMTP (it does not
/// use STARTTLS), against a server that offers it.
fn smtp_source() -> Outcome {
    let Some(program) = smtp_source_program() else {
        return common::missing("postfix (smtp-source)", "apt-get install postfix");
    };
    let server = serve(&["--tls", "self-signed"]);
    let mut child = Command::new(program)
        .args(["-m", "20", "-s", "4", "-f", "news@shop.example"])
        .args(["-t", "ann@example.org", "-S", "bulkbench", &server.addr])
        .spawn()
        .expect("smtp-source starts");
    common::wait_until(Duration::from_secs(60), "smtp-source to finish", || {
        child.try_wait().unwrap().is_some()
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "smtp-source: {status:?}");
    let stopped = stop(server);
    assert!(stopped.contains("messages=20"), "{stopped}");
    assert!(stopped.contains("tls_sessions=0"), "{stopped}");
    Ok(Completion::Completed)
}
