//! `bulkbench policyd` over TCP, speaking Postfix's policy delegation protocol as
//! `check_policy_service` does: the verdicts and codes `serve` gives, several requests on
//! one connection, which transactions are bulk, malformed requests, flags, shutdown.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

mod common;

use common::{Server, build_population, bulk_replies, policyd, run, serve, small_scenario};

const OPTED_OUT: &str = "550 5.7.1 Recipient does not accept bulk mail";
const UNKNOWN: &str = "550 5.1.1 Mailbox unknown";
const NOT_LOCAL: &str = "554 5.7.1 Relay access denied";

/// Addresses of the small scenario's population, one of each verdict, and its file.
struct Addresses {
    file: String,
    accepting: String,
    opted_out: String,
    unknown: String,
    foreign: String,
}

fn addresses(dir: &Path) -> Addresses {
    let scenario = small_scenario(dir);
    let file = dir.join("population.tsv");
    build_population(&scenario, None, &file);
    let text = std::fs::read_to_string(&file).unwrap();
    let with = |preference: &str| {
        text.lines()
            .filter(|line| !line.starts_with('@') && !line.starts_with('#'))
            .find_map(|line| line.strip_suffix(preference))
            .expect("a mailbox with that preference")
            .to_owned()
    };
    // An explicit `in` accepts under either regime, an explicit `out` refuses under both.
    let accepting = with("\tin");
    let domain = accepting.rsplit_once('@').unwrap().1.to_owned();
    Addresses {
        file: file.to_str().unwrap().to_owned(),
        accepting,
        opted_out: with("\tout"),
        unknown: format!("ann-nobody-4711@{domain}"),
        foreign: "ann@elsewhere.test".to_owned(),
    }
}

/// A policy client: one connection, as one smtpd process holds it.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(server: &Server) -> Client {
        let stream = TcpStream::connect(&server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// Sends one request of `attributes`; returns the action of the response.
    fn ask(&mut self, attributes: &[(&str, &str)]) -> String {
        let mut request = String::new();
        for (name, value) in attributes {
            request.push_str(&format!("{name}={value}\n"));
        }
        request.push('\n');
        self.stream.write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let action = line
            .strip_prefix("action=")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("not an action line: {line:?}"))
            .to_owned();
        let mut empty = String::new();
        self.reader.read_line(&mut empty).unwrap();
        assert_eq!(empty, "\n", "the response ends with an empty line");
        action
    }

    /// A RCPT request as Postfix's smtpd sends it (the attributes this server reads, and
    /// a few it ignores).
    fn rcpt(&mut self, sender: &str, client: &str, recipient: &str) -> String {
        self.ask(&[
            ("request", "smtpd_access_policy"),
            ("protocol_state", "RCPT"),
            ("protocol_name", "ESMTP"),
            ("helo_name", "mta.shop.test"),
            ("queue_id", ""),
            ("sender", sender),
            ("recipient", recipient),
            ("recipient_count", "0"),
            ("client_address", client),
            ("client_name", "mta.shop.test"),
            ("instance", "1a2b.5f3c2d1e.0"),
            ("size", "0"),
        ])
    }

    /// Sends raw bytes (the server may close before it has read them all).
    fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Waits for the server to close the connection (an end of stream, or a reset when it
    /// closed with input unread).
    fn closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
            Err(error) => panic!("the server did not close the connection: {error}"),
        }
    }
}

#[test]
fn each_verdict_gets_serves_code_and_requests_share_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let a = addresses(dir.path());
    let backend = format!("memory:{}", a.file);
    let server = policyd(&["--backend", &backend, "--bulk", "every"]);
    let mut client = Client::connect(&server);
    let sender = "news@shop.test";
    let (local, domain) = a.accepting.split_once('@').unwrap();
    let tagged = format!("{}+News@{}", local.to_uppercase(), domain.to_uppercase());
    for (recipient, expected) in [
        (a.accepting.as_str(), "DUNNO"),
        (tagged.as_str(), "DUNNO"),
        (a.opted_out.as_str(), OPTED_OUT),
        (a.unknown.as_str(), UNKNOWN),
        (a.foreign.as_str(), NOT_LOCAL),
        (
            "Postmaster",
            "550 5.7.1 Postmaster does not accept bulk mail",
        ),
    ] {
        assert_eq!(
            client.rcpt(sender, "192.0.2.1", recipient),
            expected,
            "{recipient}"
        );
    }
    // Other protocol states are not judged.
    for state in ["CONNECT", "MAIL", "DATA", "END-OF-MESSAGE"] {
        let action = client.ask(&[
            ("request", "smtpd_access_policy"),
            ("protocol_state", state),
            ("recipient", &a.opted_out),
        ]);
        assert_eq!(action, "DUNNO", "{state}");
    }
    // The same codes as `serve` on the same population, in a BULK transaction.
    let smtp = serve(&["--population", &a.file]);
    let recipients = [&a.accepting, &a.opted_out, &a.unknown, &a.foreign];
    let replies = bulk_replies(&smtp.addr, &recipients.map(String::as_str));
    for (recipient, reply) in recipients.iter().zip(replies) {
        let action = client.rcpt(sender, "192.0.2.1", recipient);
        let code = if action == "DUNNO" {
            "250 2.1.5".to_owned()
        } else {
            action.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(code, reply, "{recipient}");
    }
}

#[test]
fn listed_senders_and_clients_make_a_transaction_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let a = addresses(dir.path());
    let senders = dir.path().join("senders");
    std::fs::write(&senders, "# bulk senders\nshop.test\nnews@lists.test\n").unwrap();
    let clients = dir.path().join("clients");
    std::fs::write(&clients, "198.51.100.0/24\n").unwrap();
    let backend = format!("memory:{}", a.file);
    let server = policyd(&[
        "--backend",
        &backend,
        "--bulk-senders",
        senders.to_str().unwrap(),
        "--bulk-clients",
        clients.to_str().unwrap(),
    ]);
    let mut client = Client::connect(&server);
    let ordinary = ("friend@home.test", "203.0.113.5");
    for ((sender, address), recipient, expected) in [
        // Bulk by sender, by sender address, by client network.
        (("news@shop.test", "203.0.113.5"), &a.opted_out, OPTED_OUT),
        (("news@lists.test", "203.0.113.5"), &a.opted_out, OPTED_OUT),
        (
            ("friend@home.test", "198.51.100.7"),
            &a.opted_out,
            OPTED_OUT,
        ),
        // Not bulk: preferences do not apply, existence and relaying do.
        (ordinary, &a.opted_out, "DUNNO"),
        (("other@lists.test", "203.0.113.5"), &a.opted_out, "DUNNO"),
        (("", "203.0.113.5"), &a.opted_out, "DUNNO"),
        (ordinary, &a.accepting, "DUNNO"),
        (ordinary, &a.unknown, UNKNOWN),
        (ordinary, &a.foreign, NOT_LOCAL),
        (ordinary, &"postmaster".to_owned(), "DUNNO"),
    ] {
        assert_eq!(
            client.rcpt(sender, address, recipient),
            expected,
            "{sender} from {address} to {recipient}"
        );
    }
    let log = server.log.as_ref().unwrap();
    log.wait_for("senders=2 clients=1", Duration::from_secs(10));
}

#[test]
fn a_malformed_request_closes_its_connection_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let a = addresses(dir.path());
    let backend = format!("memory:{}", a.file);
    let server = policyd(&["--backend", &backend, "--bulk", "every"]);
    let log = server.log.as_ref().unwrap();
    let mut kept = Client::connect(&server);
    assert_eq!(kept.rcpt("", "192.0.2.1", &a.opted_out), OPTED_OUT);
    let mut many = String::new();
    for i in 0..101 {
        many.push_str(&format!("attribute{i}=x\n"));
    }
    many.push('\n');
    let cases: [(&[u8], &str); 5] = [
        (
            b"request=smtpd_access_policy\nrecipient ann@example.org\n\n",
            "line 2: no `=`",
        ),
        (&[b'a'; 70 * 1024], "line 1: longer than 8192 bytes"),
        (many.as_bytes(), "more than 100 attributes"),
        (
            b"request=smtpd_access_policy\nrecipient=\xff\xfe@x\n\n",
            "line 2: not text",
        ),
        (b"\n", "an empty request"),
    ];
    for (bytes, error) in cases {
        let mut bad = Client::connect(&server);
        bad.send_raw(bytes);
        bad.closed();
        let line = log.wait_for(error, Duration::from_secs(10));
        assert!(line.contains("malformed policy request"), "{line}");
        // The connection opened before is still served, and so is a new one.
        assert_eq!(kept.rcpt("", "192.0.2.1", &a.accepting), "DUNNO");
        assert_eq!(
            Client::connect(&server).rcpt("", "192.0.2.1", &a.unknown),
            UNKNOWN
        );
    }
}

#[test]
fn sigterm_stops_it_and_it_reports_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let a = addresses(dir.path());
    let backend = format!("memory:{}", a.file);
    let mut server = policyd(&["--backend", &backend, "--bulk", "every"]);
    let mut client = Client::connect(&server);
    assert_eq!(client.rcpt("", "192.0.2.1", &a.accepting), "DUNNO");
    assert_eq!(client.rcpt("", "192.0.2.1", &a.opted_out), OPTED_OUT);
    common::signal(&server.child, 15);
    // The idle connection is closed, and the server exits 0.
    client.closed();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let log = server.log.take().unwrap().all();
    let stopped = log
        .lines()
        .find(|line| line.contains("policy server stopped"))
        .unwrap_or_else(|| panic!("{log}"));
    for field in ["connections=1", "requests=2", "accepted=1", "opted_out=1"] {
        assert!(stopped.contains(field), "{stopped}");
    }
}

#[test]
fn the_rule_is_required_and_lists_and_actions_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let a = addresses(dir.path());
    let backend = format!("memory:{}", a.file);
    let bad_list = dir.path().join("bad-senders");
    std::fs::write(&bad_list, "shop.test\nnews@\n").unwrap();
    let bad_clients = dir.path().join("bad-clients");
    std::fs::write(&bad_clients, "192.0.2.0/33\n").unwrap();
    let base = ["policyd", "--listen", "127.0.0.1:0", "--backend", &backend];
    for (extra, status, needle) in [
        (vec![], 2, "--bulk"),
        (
            vec!["--bulk", "every", "--bulk-senders", "x"],
            2,
            "cannot be used with",
        ),
        (
            vec!["--bulk-senders", bad_list.to_str().unwrap()],
            1,
            "line 2: \"news@\": not a domain name",
        ),
        (
            vec!["--bulk-clients", bad_clients.to_str().unwrap()],
            1,
            "prefix length",
        ),
        (
            vec!["--bulk-senders", "/nonexistent/senders"],
            1,
            "cannot read /nonexistent/senders",
        ),
        (
            vec![
                "--bulk",
                "every",
                "--unavailable-action",
                "DUNNO\naction=OK",
            ],
            2,
            "control character",
        ),
        (vec!["--bulk", "sometimes"], 2, "invalid value"),
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let output = run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        // Nothing was announced: a supervisor waiting for the line sees the failure.
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    let output = run(&[
        "policyd",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "canned:1",
        "--bulk",
        "every",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no store"));
}
