//! `bulkbench serve` as a user runs it: the real binary, real flags, real signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, run, signal};

fn example_population() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios/example-population.tsv")
        .display()
        .to_string()
}

#[test]
fn bad_flags_and_bad_populations_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tsv");
    std::fs::write(
        &bad,
        "@example.org\topt-in\nann@example.org\tin\nann@other.example\tin\n",
    )
    .unwrap();
    let bad = bad.display().to_string();
    let population = example_population();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["serve", "--population", &bad, "--listen", "127.0.0.1:0"],
            "line 3",
        ),
        (
            vec!["serve", "--population", "/nonexistent/pop.tsv"],
            "/nonexistent/pop.tsv",
        ),
        (
            vec!["serve", "--population", &population, "--listen", "nowhere"],
            "--listen",
        ),
        (
            vec![
                "serve",
                "--population",
                &population,
                "--max-recipients",
                "0",
            ],
            "--max-recipients",
        ),
        (
            vec!["serve", "--population", &population, "--sink", "spool:"],
            "spool",
        ),
        (
            vec!["serve", "--population", &population, "--sink", "void"],
            "--sink",
        ),
        (
            vec![
                "serve",
                "--population",
                &population,
                "--recipient-delimiter",
                "ab",
            ],
            "--recipient-delimiter",
        ),
        (
            vec![
                "serve",
                "--population",
                &population,
                "--hostname",
                "two words",
            ],
            "--hostname",
        ),
        (
            vec![
                "serve",
                "--population",
                &population,
                "--max-connections-per-ip",
                "0",
            ],
            "--max-connections-per-ip",
        ),
        (
            vec!["serve", "--population", &population, "--min-data-rate", "0"],
            "--min-data-rate",
        ),
        (
            vec!["serve", "--population", &population, "--line-timeout", "0"],
            "--line-timeout",
        ),
        (vec!["serve"], "--population"),
        (
            vec!["serve", "--backend", "canned:1.5"],
            "1.5 is not a share: expected a number in [0, 1]",
        ),
        (
            vec!["serve", "--backend", "canned:x"],
            "\"x\" is not a number",
        ),
        (vec!["serve", "--backend", "canned:"], "canned:SHARE"),
        (vec!["serve", "--backend", "cannned:0.5"], "canned[:SHARE]"),
        (
            vec![
                "serve",
                "--population",
                &population,
                "--listen",
                "192.0.2.1:25",
            ],
            "cannot listen",
        ),
        // Refused before the ready line, which must not be printed (stdout stays empty).
        (
            vec![
                "serve",
                "--population",
                &population,
                "--listen",
                "127.0.0.1:0",
                "--sink",
                "spool:/proc/no-such-spool",
            ],
            "cannot open spool directory /proc/no-such-spool",
        ),
    ];
    for (args, needle) in cases {
        assert_refused(&args, needle);
    }
}

/// `bulkbench ARGS` fails with `needle` on stderr, no panic, nothing on stdout, and each
/// cause once (an error whose message repeats its source prints it twice).
fn assert_refused(args: &[&str], needle: &str) {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(needle),
        "{args:?}: stderr lacks {needle:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    assert!(output.stdout.is_empty(), "{args:?} printed to stdout");
    assert!(
        stderr.matches("(os error").count() <= 1,
        "{args:?}: a cause printed twice:\n{stderr}"
    );
}

/// PEM files in `dir`: a certificate for localhost and its key, and another key.
fn pem_files(dir: &Path) -> (String, String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("cert.pem", made.cert.pem()),
        write("key.pem", made.signing_key.serialize_pem()),
        write("other-key.pem", other.serialize_pem()),
    )
}

#[test]
fn bad_tls_flags_and_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, other_key) = pem_files(dir.path());
    let population = example_population();
    let serve = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec![
            "serve",
            "--population",
            &population,
            "--listen",
            "127.0.0.1:0",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let with = |flags: &[&str]| -> Vec<String> {
        let mut args = serve(&[]);
        args.extend(flags.iter().map(|flag| (*flag).to_owned()));
        args
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        // clap: --require-tls needs a source, the two sources exclude each other, and
        // --tls-cert and --tls-key need each other.
        (
            serve(&["--require-tls"]),
            "--tls <self-signed>|--tls-cert <FILE>",
        ),
        (
            with(&[
                "--tls",
                "self-signed",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ]),
            "cannot be used with",
        ),
        (with(&["--tls-cert", &cert]), "--tls-key"),
        (with(&["--tls-key", &key]), "--tls-cert"),
        (serve(&["--tls", "self-made"]), "self-signed"),
        // Files: named in the error, with what is wrong with them.
        (
            with(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", &key]),
            "cannot read certificates from /nonexistent/cert.pem",
        ),
        (
            with(&["--tls-cert", &key, "--tls-key", &key]),
            "no certificate in",
        ),
        (
            with(&["--tls-cert", &cert, "--tls-key", &cert]),
            "cannot read a private key",
        ),
        (
            with(&["--tls-cert", &cert, "--tls-key", &other_key]),
            "cannot be used together",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(&args, needle);
    }
    // The matching pair serves, with STARTTLS offered.
    let server = start(&["--tls-cert", &cert, "--tls-key", &key]);
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"EHLO c.example\r\nQUIT\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.contains("250-STARTTLS\r\n"), "{text}");
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

struct Server {
    child: Child,
    addr: String,
}

fn start(extra: &[&str]) -> Server {
    let population = example_population();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--population",
            &population,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("a line on stdout");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .to_owned();
    // Nothing else may appear on stdout: it is for that one line only.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        assert!(rest.is_empty(), "more on stdout: {rest:?}");
    });
    Server { child, addr }
}

impl Server {
    fn terminate(mut self) -> std::process::ExitStatus {
        signal(&self.child, 15); // SIGTERM
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A connection to `addr` (replies within 10 s), its reader, and the greeting line.
fn connect(addr: &str) -> (TcpStream, BufReader<TcpStream>, String) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    (stream, reader, greeting)
}

/// A connection to a server started with `--hostname mx.test`, greeted, with BULK
/// advertised and a bulk transaction opened (each step checked).
fn open_bulk_transaction(addr: &str) -> (TcpStream, BufReader<TcpStream>) {
    let (mut stream, mut reader, greeting) = connect(addr);
    assert_eq!(greeting, "220 mx.test ESMTP bulkbench\r\n");
    let ehlo = exchange(&mut stream, &mut reader, "EHLO c.example");
    assert!(ehlo.contains("250 BULK\r\n"), "{ehlo}");
    assert!(
        exchange(&mut stream, &mut reader, "BULK FROM:<n@shop.example>").starts_with("250 2.1.0")
    );
    (stream, reader)
}

fn exchange(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, command: &str) -> String {
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        reply.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return reply;
        }
    }
}

#[test]
fn serves_on_a_free_port_and_stops_cleanly_on_sigterm() {
    let server = start(&["--hostname", "mx.test"]);
    let (mut stream, mut reader) = open_bulk_transaction(&server.addr);
    assert!(
        exchange(&mut stream, &mut reader, "RCPT TO:<ann@example.org>").starts_with("250 2.1.5")
    );
    assert!(
        exchange(&mut stream, &mut reader, "RCPT TO:<bob@example.org>").starts_with("550 5.7.1")
    );
    assert!(exchange(&mut stream, &mut reader, "QUIT").starts_with("221"));
    drop((stream, reader));
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn harvest_resistant_flag_and_spool_sink_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("spool:{}", dir.path().display());
    let server = start(&["--harvest-resistant", "--sink", &sink]);
    let (mut stream, mut reader, _) = connect(&server.addr);
    exchange(&mut stream, &mut reader, "EHLO c.example");
    exchange(&mut stream, &mut reader, "BULK FROM:<n@shop.example>");
    let unknown = exchange(&mut stream, &mut reader, "RCPT TO:<nobody@example.org>");
    let opted_out = exchange(&mut stream, &mut reader, "RCPT TO:<bob@example.org>");
    assert_eq!(unknown, opted_out);
    assert!(exchange(&mut stream, &mut reader, "RCPT TO:<ann@example.org>").starts_with("250"));
    assert!(exchange(&mut stream, &mut reader, "DATA").starts_with("354"));
    let queued = exchange(&mut stream, &mut reader, "hello\r\n.");
    assert!(queued.starts_with("250 2.0.0"), "{queued}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("new")).unwrap().count(),
        1
    );
    exchange(&mut stream, &mut reader, "QUIT");
    drop((stream, reader));
    assert!(server.terminate().success());
}

/// The per-address limit defaults to a tenth of `--max-connections`, and a command line
/// not completed within `--line-timeout` ends the session.
#[test]
fn the_per_address_limit_and_the_line_deadline_take_effect() {
    let server = start(&["--max-connections", "20", "--line-timeout", "1"]);
    let first = connect(&server.addr);
    let second = connect(&server.addr);
    assert!(first.2.starts_with("220 ") && second.2.starts_with("220 "));
    // A third from 127.0.0.1: over its two (20 / 10).
    let (_, _, third) = connect(&server.addr);
    assert!(third.starts_with("421 4.7.0 "), "{third}");
    // A started line that never ends: 421 4.4.2 after a second (the idle timeout is 300 s,
    // far beyond the 10 s read timeout of the reader).
    let (mut stream, mut reader, _) = first;
    stream.write_all(b"NOOP and then nothing").unwrap();
    let mut closing = String::new();
    reader.read_line(&mut closing).unwrap();
    assert!(closing.starts_with("421 4.4.2 "), "{closing}");
    drop((stream, reader, second));
    assert!(server.terminate().success());
}

/// `serve --backend canned:SHARE` needs no population and answers every RCPT by its rule,
/// in the order the RCPTs arrive, whatever the address: served or not, known or not.
#[test]
fn the_canned_backend_answers_every_rcpt_by_its_rule() {
    let server = common::serve(&["--backend", "canned:0.5", "--hostname", "mx.test"]);
    let (mut stream, mut reader) = open_bulk_transaction(&server.addr);
    // Half of the stream, from its first RCPT: refused, accepted, refused, ...
    let rcpts = [
        "ann@example.org",
        "bob@example.org",
        "nobody@example.org",
        "x@elsewhere.example",
        "Carol+tag@EXAMPLE.ORG",
        "postmaster@example.org",
    ];
    for (k, rcpt) in rcpts.iter().enumerate() {
        let reply = exchange(&mut stream, &mut reader, &format!("RCPT TO:<{rcpt}>"));
        let expected = if k % 2 == 1 { "250 2.1.5" } else { "550 5.7.1" };
        assert!(reply.starts_with(expected), "RCPT {k} <{rcpt}>: {reply}");
    }
    // Accepted ones make DATA go through, as with any backend.
    assert!(exchange(&mut stream, &mut reader, "DATA").starts_with("354"));
    assert!(exchange(&mut stream, &mut reader, "hi\r\n.").starts_with("250 2.0.0"));
    // Pipelined, the rule goes on where it was (RCPT 6 is refused, 7 accepted).
    stream
        .write_all(
            b"BULK FROM:<n@shop.example>\r\nRCPT TO:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
        )
        .unwrap();
    for expected in ["250 2.1.0", "550 5.7.1", "250 2.1.5"] {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(expected), "{expected}: {line}");
    }
    assert!(exchange(&mut stream, &mut reader, "RSET").starts_with("250"));
    // In a MAIL transaction preferences are not consulted: a refusal by the rule is a 250.
    assert!(exchange(&mut stream, &mut reader, "MAIL FROM:<n@shop.example>").starts_with("250"));
    for k in 8..10 {
        let reply = exchange(
            &mut stream,
            &mut reader,
            &format!("RCPT TO:<r{k}@x.example>"),
        );
        assert!(reply.starts_with("250 2.1.5"), "RCPT {k}: {reply}");
    }
    assert!(exchange(&mut stream, &mut reader, "QUIT").starts_with("221"));
    drop((stream, reader));

    // Plain `canned` accepts every RCPT.
    let server = common::serve(&["--backend", "canned"]);
    let (mut stream, mut reader, _) = connect(&server.addr);
    exchange(&mut stream, &mut reader, "EHLO c.example");
    exchange(&mut stream, &mut reader, "BULK FROM:<n@shop.example>");
    for rcpt in ["a@example.org", "b@nowhere.example", "c@example.org"] {
        let reply = exchange(&mut stream, &mut reader, &format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with("250 2.1.5"), "<{rcpt}>: {reply}");
    }
}
