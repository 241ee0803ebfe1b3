//! Postfix against bulkbench's Postfix integrations: `postmap` reads the access table that
//! `population --format postfix-access` writes, and a private Postfix instance refuses
//! RCPTs through `bulkbench policyd` (`check_policy_service`) and through that table
//! (`check_recipient_access`) with the codes `serve` gives.
//!
//! Postfix comes from Debian's `postfix` and `postfix-lmdb`. A missing one shows its tests
//! as ignored, naming the package; with `BULKBENCH_REQUIRE_EXTERNAL=1` (as CI runs) they
//! fail instead. So these tests run under libtest-mimic (`harness = false`).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

mod common;

use common::{Lines, build_population, ok, policyd, small_scenario};

type Outcome = Result<Completion, Failed>;

const OPTED_OUT: &str = "550 5.7.1 Recipient does not accept bulk mail";
const UNKNOWN: &str = "550 5.1.1 Mailbox unknown";

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "population_writes_the_access_table_whole_or_to_stdout",
            population_writes_the_table,
        ),
        Trial::ignorable_test(
            "postmap_reads_the_access_table_with_serves_codes",
            postmap_reads_the_table,
        ),
        Trial::ignorable_test(
            "postfix_refuses_rcpts_through_policyd_and_through_the_access_table",
            postfix_refuses_rcpts,
        ),
        Trial::ignorable_test(
            "the_postfix_comparison_verifies_every_reply_of_the_three_targets",
            postfix_comparison,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// A Postfix program: found on the PATH, or in /usr/sbin, where Debian puts them (and
/// which an unprivileged user's PATH may lack).
fn program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    match on_path {
        true => PathBuf::from(name),
        false => Path::new("/usr/sbin").join(name),
    }
}

/// Runs a Postfix program; `None` when it is not installed.
fn postfix_tool(name: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program(name)).args(args).output() {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => panic!("{name} {args:?}: {error}"),
    }
}

/// A configuration folder for Postfix's tools (an empty main.cf): a machine with Postfix
/// installed but not configured (Debian's "No configuration") has no /etc/postfix/main.cf,
/// and postconf and postmap refuse to run without one.
fn tool_config(dir: &Path) -> String {
    let config = dir.join("tools");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("main.cf"), "").unwrap();
    config.to_str().unwrap().to_owned()
}

/// Whether `postmap` and its lmdb table type are installed; else what the test returns.
fn lmdb_tables(config: &str) -> Result<(), Outcome> {
    let Some(types) = postfix_tool("postconf", &["-c", config, "-m"]) else {
        return Err(common::missing(
            "postfix",
            "apt-get install postfix postfix-lmdb",
        ));
    };
    if !types.status.success() {
        panic!("postconf -m: {}", String::from_utf8_lossy(&types.stderr));
    }
    if !String::from_utf8_lossy(&types.stdout)
        .lines()
        .any(|t| t == "lmdb")
    {
        return Err(common::missing(
            "postfix-lmdb",
            "apt-get install postfix-lmdb",
        ));
    }
    Ok(())
}

/// Addresses of the small scenario's population, one of each verdict.
struct Addresses {
    population: PathBuf,
    scenario: PathBuf,
    domains: Vec<String>,
    accepting: String,
    opted_out: String,
    unknown: String,
}

fn addresses(dir: &Path) -> Addresses {
    let scenario = small_scenario(dir);
    let population = dir.join("population.tsv");
    build_population(&scenario, None, &population);
    let text = std::fs::read_to_string(&population).unwrap();
    let domains = text
        .lines()
        .filter_map(|line| line.strip_prefix('@'))
        .map(|line| line.split('\t').next().unwrap().to_owned())
        .collect();
    let with = |preference: &str| {
        text.lines()
            .filter(|line| !line.starts_with('@') && !line.starts_with('#'))
            .find_map(|line| line.strip_suffix(preference))
            .expect("a mailbox with that preference")
            .to_owned()
    };
    let accepting = with("\tin");
    let domain = accepting.rsplit_once('@').unwrap().1.to_owned();
    Addresses {
        population,
        scenario,
        domains,
        accepting,
        opted_out: with("\tout"),
        unknown: format!("ann-nobody-4711@{domain}"),
    }
}

/// Writes the access table into `dir` and builds it with `postmap lmdb:`; its map name.
fn access_table(dir: &Path, config: &str, a: &Addresses) -> Result<String, Failed> {
    let table = dir.join("access");
    ok(&[
        "population",
        a.scenario.to_str().unwrap(),
        "--format",
        "postfix-access",
        "-o",
        table.to_str().unwrap(),
    ]);
    let map = format!("lmdb:{}", table.display());
    let built = postfix_tool("postmap", &["-c", config, &map]).ok_or("postmap vanished")?;
    if !built.status.success() {
        return Err(format!("postmap {map}: {}", String::from_utf8_lossy(&built.stderr)).into());
    }
    Ok(map)
}

/// Needs no Postfix: the table `population --format postfix-access` writes, in a file
/// (readable, not a private temporary file) and on standard output.
fn population_writes_the_table() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let a = addresses(dir.path());
    let table = dir.path().join("access");
    let args = |output: &str| {
        vec![
            "population".to_owned(),
            a.scenario.to_str().unwrap().to_owned(),
            "--format".to_owned(),
            "postfix-access".to_owned(),
            "-o".to_owned(),
            output.to_owned(),
        ]
    };
    let args_to_file = args(table.to_str().unwrap());
    ok(&args_to_file.iter().map(String::as_str).collect::<Vec<_>>());
    let text = std::fs::read_to_string(&table).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&table).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    let lines: Vec<&str> = text.lines().collect();
    // The small scenario: a comment, 25 domains, 4,000 mailboxes.
    assert_eq!(lines.len(), 1 + 25 + 4000);
    assert!(lines[0].starts_with("# bulkbench population as a Postfix access table"));
    for domain in &a.domains {
        assert!(
            lines.contains(&format!("{domain}\t{UNKNOWN}").as_str()),
            "{domain}"
        );
    }
    assert!(lines.contains(&format!("{}\tDUNNO", a.accepting).as_str()));
    assert!(lines.contains(&format!("{}\t{OPTED_OUT}", a.opted_out).as_str()));
    // The same bytes on standard output; nothing but the table in the folder.
    // (`Command::output` reads as the child writes: `common::run` reads after the exit,
    // and a table fills the pipe first.)
    let output = Command::new(common::BIN)
        .args(args("-"))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(output.stdout == text.as_bytes());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["access", "backends-test.toml", "population.tsv"]);
    // A format is not a store.
    let mut both = args_to_file;
    both.extend(["--backend".to_owned(), "fst".to_owned()]);
    let refused = common::run(&both.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(refused.status.code(), Some(2));
    Ok(())
}

fn postmap_reads_the_table() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let config = tool_config(dir.path());
    if let Err(outcome) = lmdb_tables(&config) {
        return outcome;
    }
    let a = addresses(dir.path());
    let map = access_table(dir.path(), &config, &a)?;
    let query = |key: &str| {
        let output = postfix_tool("postmap", &["-c", &config, "-q", key, &map]).unwrap();
        // Exit 0: found, 1: not found; anything else is an error.
        match output.status.code() {
            Some(0) => Some(
                String::from_utf8_lossy(&output.stdout)
                    .trim_end()
                    .to_owned(),
            ),
            Some(1) => None,
            _ => panic!(
                "postmap -q {key}: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    };
    let domain = a.unknown.rsplit_once('@').unwrap().1;
    assert_eq!(query(&a.accepting).as_deref(), Some("DUNNO"));
    assert_eq!(query(&a.accepting.to_uppercase()).as_deref(), Some("DUNNO"));
    assert_eq!(query(&a.opted_out).as_deref(), Some(OPTED_OUT));
    // An unknown mailbox has no entry of its own: Postfix's next key, its domain, refuses.
    assert_eq!(query(&a.unknown), None);
    assert_eq!(query(domain).as_deref(), Some(UNKNOWN));
    // A domain not served has none: Postfix's relay control answers it.
    assert_eq!(query("elsewhere.test"), None);
    Ok(Completion::Completed)
}

/// A private Postfix instance in a temporary folder, run by `postfix start-fg`; stopped
/// on drop.
struct Postfix {
    config: PathBuf,
    child: Child,
    log: Option<Lines>,
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(program("postfix"))
            .args(["-c", self.config.to_str().unwrap(), "stop"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (the race with another binder is accepted).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postfix {
    /// Starts Postfix relaying for `domains`, with one smtpd per `(port, recipient
    /// restrictions)` listener, and waits until each greets.
    fn start(
        dir: &Path,
        domains: &[String],
        listeners: &[(u16, String)],
    ) -> Result<Postfix, Failed> {
        let config = dir.join("etc");
        let data = dir.join("data");
        for folder in [&config, &data, &dir.join("queue")] {
            std::fs::create_dir_all(folder).unwrap();
        }
        // Postfix's daemons run as `postfix` and chdir into the queue: a temporary
        // folder is private to its owner.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let chown = Command::new("chown")
            .args(["postfix", data.to_str().unwrap()])
            .output()
            .map_err(|e| format!("chown: {e}"))?;
        if !chown.status.success() {
            return Err(
                format!("chown postfix: {}", String::from_utf8_lossy(&chown.stderr)).into(),
            );
        }
        let mut main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             maillog_file = /dev/stdout\n\
             myhostname = mx.bulkbench.test\n\
             mydestination =\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             relay_domains = {domains}\n\
             relay_recipient_maps =\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = reject_unauth_destination\n\
             smtpd_peername_lookup = no\n\
             smtpd_error_sleep_time = 0\n\
             smtpd_soft_error_limit = 1000\n\
             smtpd_hard_error_limit = 1000\n\
             smtputf8_enable = no\n\
             biff = no\n",
            queue = dir.join("queue").display(),
            data = data.display(),
            domains = domains.join(" "),
        );
        // What README.md ("Postfix") asks of main.cf: subaddresses fall back to their
        // mailbox; relay domains and access table domains match themselves, not their
        // subdomains (which `serve` does not serve).
        main_cf.push_str(
            "recipient_delimiter = +\n\
             parent_domain_matches_subdomains = debug_peer_list, fast_flush_domains, \
             mynetworks, permit_mx_backup_networks, qmqpd_authorized_clients\n",
        );
        let mut master_cf = String::new();
        let stock = std::fs::read_to_string("/etc/postfix/master.cf")
            .map_err(|e| format!("/etc/postfix/master.cf: {e}"))?;
        for line in stock.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first() == Some(&"smtp") && fields.get(1) == Some(&"inet") {
                continue;
            }
            // Nothing chrooted: the temporary queue folder holds no copies of /etc.
            if !line.starts_with(['#', ' ', '\t']) && fields.len() >= 8 {
                let mut fields = fields;
                fields[4] = "n";
                master_cf.push_str(&fields.join(" "));
            } else {
                master_cf.push_str(line);
            }
            master_cf.push('\n');
        }
        for (i, (port, restrictions)) in listeners.iter().enumerate() {
            main_cf.push_str(&format!("bulkbench_restrictions_{i} = {restrictions}\n"));
            master_cf.push_str(&format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n  \
                 -o smtpd_recipient_restrictions=$bulkbench_restrictions_{i}\n"
            ));
        }
        std::fs::write(config.join("main.cf"), main_cf).unwrap();
        std::fs::write(config.join("master.cf"), master_cf).unwrap();
        let mut child = Command::new(program("postfix"))
            .args(["-c", config.to_str().unwrap(), "start-fg"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("postfix start-fg: {e}"))?;
        let log = Lines::read(child.stdout.take().unwrap());
        let mut errors = Some(Lines::read(child.stderr.take().unwrap()));
        let mut postfix = Postfix {
            config,
            child,
            log: Some(log),
        };
        for (port, _) in listeners {
            postfix.wait_for_greeting(*port, &mut errors)?;
        }
        Ok(postfix)
    }

    /// Polls the smtpd listener on `port` until it greets; fails if Postfix exits first.
    fn wait_for_greeting(&mut self, port: u16, errors: &mut Option<Lines>) -> Result<(), Failed> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut greeting = String::new();
                if BufReader::new(stream).read_line(&mut greeting).is_ok()
                    && greeting.starts_with("220 ")
                {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log.take().map(Lines::all).unwrap_or_default();
                let errors = errors.take().map(Lines::all).unwrap_or_default();
                return Err(
                    format!("postfix exited ({status}) before serving:\n{errors}\n{log}").into(),
                );
            }
            if Instant::now() > deadline {
                return Err(format!("postfix did not greet on port {port} within 60 s").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it; its whole log (its standard output), for failure messages.
    fn stop_for_log(mut self) -> String {
        let log = self.log.take();
        drop(self);
        log.map(Lines::all).unwrap_or_default()
    }
}

/// An SMTP session: the full RCPT replies of `recipients` in a transaction from `sender`.
fn rcpt_replies(port: u16, sender: &str, recipients: &[&str]) -> Vec<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut reply = || loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            break line.trim_end().to_owned();
        }
    };
    let mut send = |line: &str| writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    assert!(reply().starts_with("220 "));
    send("EHLO mta.shop.test");
    assert!(reply().starts_with("250 "));
    send(&format!("MAIL FROM:<{sender}>"));
    let mail = reply();
    assert!(mail.starts_with("250 "), "{mail}");
    let replies = recipients
        .iter()
        .map(|rcpt| {
            send(&format!("RCPT TO:<{rcpt}>"));
            reply()
        })
        .collect();
    send("QUIT");
    replies
}

/// Checks a Postfix RCPT reply: its code and enhanced code, and that it ends with
/// `text` (Postfix puts `<address>: Recipient address rejected:` before an access
/// action's text).
fn assert_reply(reply: &str, code: &str, text: &str, what: &str) {
    assert!(
        reply.starts_with(code) && reply.ends_with(text),
        "{what}: {reply:?}, expected {code} ... {text}"
    );
}

/// What running a private Postfix needs: Postfix with its LMDB tables (the tools'
/// configuration folder in `dir` is returned) and root privileges; else the outcome to
/// report (ignored, or failed under `BULKBENCH_REQUIRE_EXTERNAL=1`).
fn postfix_can_run(dir: &Path) -> Result<String, Outcome> {
    let config = tool_config(dir);
    lmdb_tables(&config)?;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(common::missing(
            "root privileges",
            "run as root: Postfix's master starts as root",
        ));
    }
    Ok(config)
}

fn postfix_refuses_rcpts() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let config = match postfix_can_run(dir.path()) {
        Ok(config) => config,
        Err(outcome) => return outcome,
    };
    let a = addresses(dir.path());
    let map = access_table(dir.path(), &config, &a)?;
    let senders = dir.path().join("bulk-senders");
    std::fs::write(&senders, "shop.test\n").unwrap();
    let backend = format!("memory:{}", a.population.display());
    let server = policyd(&[
        "--backend",
        &backend,
        "--bulk-senders",
        senders.to_str().unwrap(),
    ]);
    let (through_policyd, through_table) = (free_port(), free_port());
    let postfix = Postfix::start(
        dir.path(),
        &a.domains,
        &[
            (
                through_policyd,
                format!("check_policy_service inet:{}", server.addr),
            ),
            (through_table, format!("check_recipient_access {map}")),
        ],
    )?;
    let (local, domain) = a.accepting.split_once('@').unwrap();
    let tagged = format!("{}+News@{}", local.to_uppercase(), domain.to_uppercase());
    let subdomain = format!("{local}@sub.{domain}");
    let recipients = [
        a.accepting.as_str(),
        &tagged,
        &a.opted_out,
        &a.unknown,
        "ann@elsewhere.test",
        &subdomain,
    ];
    let expected = [
        ("250 2.1.5", "Ok"),
        ("250 2.1.5", "Ok"),
        ("550 5.7.1", "Recipient does not accept bulk mail"),
        ("550 5.1.1", "Mailbox unknown"),
        ("554 5.7.1", "Relay access denied"),
        ("554 5.7.1", "Relay access denied"),
    ];
    let check = |port, sender, expected: &[(&str, &str)], what: &str| {
        let replies = rcpt_replies(port, sender, &recipients);
        for ((reply, (code, text)), rcpt) in replies.iter().zip(expected).zip(recipients) {
            assert_reply(reply, code, text, &format!("{what}, {rcpt}"));
        }
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check(
            through_policyd,
            "news@shop.test",
            &expected,
            "policyd, bulk",
        );
        // Not bulk: the opted-out recipient takes ordinary mail; the rest is the same.
        let mut ordinary = expected;
        ordinary[2] = ("250 2.1.5", "Ok");
        check(
            through_policyd,
            "friend@home.test",
            &ordinary,
            "policyd, not bulk",
        );
        // The table applies preferences to all mail.
        check(through_table, "friend@home.test", &expected, "access table");
    }));
    if let Err(panic) = result {
        eprintln!("postfix log:\n{}", postfix.stop_for_log());
        std::panic::resume_unwind(panic);
    }
    let log = server.log.as_ref().unwrap();
    log.wait_for("policy server serving", Duration::from_secs(5));
    Ok(Completion::Completed)
}

/// `benches/postfix_compare.py`, the recipe of BENCHMARKS.md's Postfix figures, on a short
/// run of its scenario: `serve`, Postfix with the access table and Postfix with `policyd`
/// answer every RCPT as the population says, and each one's server CPU is measured.
fn postfix_comparison() -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    if let Err(outcome) = postfix_can_run(dir.path()) {
        return outcome;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scenario = std::fs::read_to_string(root.join("scenarios/postfix.toml"))
        .unwrap()
        .replace("mailboxes = 200000", "mailboxes = 5000")
        .replace("duration_secs = 12.0", "duration_secs = 2.0")
        .replace("warmup_secs = 2.0", "warmup_secs = 0.5");
    let short = dir.path().join("postfix-short.toml");
    std::fs::write(&short, scenario).unwrap();
    let out = dir.path().join("comparison");
    let run = Command::new("python3")
        .arg(root.join("benches/postfix_compare.py"))
        .arg(&short)
        .args(["--repeat", "1", "--bin", common::BIN, "--out"])
        .arg(&out)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    if !run.status.success() {
        return Err(format!("postfix_compare.py: {}\n{stdout}\n{stderr}", run.status).into());
    }
    let text = std::fs::read_to_string(out.join("comparison.json")).unwrap();
    let comparison: bulk_report::compare::Comparison = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = comparison.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["serve", "postfix-access", "postfix-policyd"]);
    for arm in &comparison.arms {
        let metric = |key: &str| arm.metric(key).map(|m| m.median);
        assert_eq!(metric("mismatches"), Some(0.0), "{}: {text}", arm.name);
        assert!(
            metric("rcpt_per_sec").unwrap() > 0.0,
            "{}: {text}",
            arm.name
        );
        assert!(
            metric("server_cpu_us_per_rcpt").unwrap() > 0.0,
            "{}: {text}",
            arm.name
        );
    }
    Ok(Completion::Completed)
}
