//! What the CLI tests share: running the real binary with a deadline, `serve` children
//! that are killed when dropped, and waiting for what a running child reports (its output,
//! /proc) instead of sleeping.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use libtest_mimic::{Completion, Failed};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkbench");

/// Runs the binary to completion, killing it after 300 s. Output is read after the exit,
/// so use it for commands that print little (a report table, an error).
pub fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bulkbench {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// [`run`], which must succeed.
pub fn ok(args: &[&str]) -> Output {
    let output = run(args);
    assert!(
        output.status.success(),
        "bulkbench {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `bulkbench population SCENARIO [--backend BACKEND] -o OUT`, which must succeed.
pub fn build_population(scenario: &std::path::Path, backend: Option<&str>, out: &std::path::Path) {
    let mut args = vec!["population", scenario.to_str().unwrap()];
    if let Some(backend) = backend {
        args.extend(["--backend", backend]);
    }
    args.extend(["-o", out.to_str().unwrap()]);
    ok(&args);
}

/// A `bulkbench serve` child and its address; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// Its log (standard error), when started by [`serve_logged`].
    pub log: Option<Lines>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bulkbench serve --listen 127.0.0.1:0 ARGS...` and waits for its line.
pub fn serve(args: &[&str]) -> Server {
    start_server("serve", args, false)
}

/// [`serve`], with the server's log (at `info`) read into [`Server::log`].
pub fn serve_logged(args: &[&str]) -> Server {
    start_server("serve", args, true)
}

/// Starts `bulkbench policyd --listen 127.0.0.1:0 ARGS...`, its log read into
/// [`Server::log`], and waits for its line.
pub fn policyd(args: &[&str]) -> Server {
    start_server("policyd", args, true)
}

fn start_server(command: &str, args: &[&str], logged: bool) -> Server {
    let mut child = Command::new(BIN)
        .args([command, "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(if logged {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("binary starts");
    let log = child.stderr.take().map(Lines::read);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{command} {args:?}: {line:?}"))
        .to_owned();
    Server { child, addr, log }
}

/// Sends `signal` to a child.
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { kill(child.id() as i32, signal) };
}

/// Sends `signal` to every process of `child`'s process group, as a terminal does with
/// Ctrl-C to its foreground group (`child` must lead its own group).
pub fn signal_group(child: &Child, signal: i32) {
    // SAFETY: kill(2) on the process group our own child leads.
    unsafe { kill(-(child.id() as i32), signal) };
}

/// The pids of `pid`'s children, from /proc (every thread's list).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat; `None` once the process is gone.
pub fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name
        .split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(str::to_owned)
}

/// Waits up to `limit` for `pid` to exit (gone, or a zombie nobody has reaped yet).
pub fn exits_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match stat_field(pid, 3).as_deref() {
            None | Some("Z") | Some("X") => return true,
            Some(_) if Instant::now() > deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Polls `ready` every 20 ms until it holds; panics saying `what` was awaited after
/// `limit`. For states a program shows only from outside (/proc, files).
pub fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} in vain for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child's output stream, read on a thread of its own as it comes, so that a test can
/// wait for the line that reports a state rather than sleep and hope.
pub struct Lines {
    shared: Arc<(Mutex<ReadSoFar>, Condvar)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct ReadSoFar {
    text: String,
    ended: bool,
}

impl Lines {
    /// Starts reading `stream` (a child's piped stdout or stderr).
    pub fn read(stream: impl Read + Send + 'static) -> Lines {
        let shared = Arc::new((Mutex::new(ReadSoFar::default()), Condvar::new()));
        let writer = Arc::clone(&shared);
        let reader = std::thread::spawn(move || {
            let mut stream = BufReader::new(stream);
            loop {
                let mut line = String::new();
                let n = stream.read_line(&mut line).unwrap_or(0);
                let (so_far, changed) = &*writer;
                let mut so_far = so_far.lock().unwrap();
                so_far.text.push_str(&line);
                so_far.ended = n == 0;
                changed.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        Lines {
            shared,
            reader: Some(reader),
        }
    }

    /// The first line that contains `needle`, waiting up to `limit` for it. Panics, with
    /// what was read, if the stream ends (the child exited) or the time is up first.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let (so_far, changed) = &*self.shared;
        let mut so_far = so_far.lock().unwrap();
        loop {
            if let Some(line) = so_far.text.lines().find(|line| line.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                !so_far.ended,
                "the output ended without {needle:?}:\n{}",
                so_far.text
            );
            let now = Instant::now();
            assert!(
                now < deadline,
                "no {needle:?} within {limit:?}:\n{}",
                so_far.text
            );
            so_far = changed.wait_timeout(so_far, deadline - now).unwrap().0;
        }
    }

    /// Everything the stream carried, once it has ended.
    pub fn all(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        std::mem::take(&mut self.shared.0.lock().unwrap().text)
    }
}

/// The TCP connections to or from `addr` that have ended and wait out TIME_WAIT (on
/// whichever side closed first), from /proc/net/tcp, as (local, remote) pairs. A
/// connection to a server shows here once its session is over, for a minute after.
pub fn ended_connections(addr: SocketAddrV4) -> HashSet<(SocketAddrV4, SocketAddrV4)> {
    // "  0: 0100007F:A3C2 0100007F:1F90 06 ...": addresses as the kernel holds them (the
    // IPv4 address in network byte order printed as a native integer), then the state.
    fn parse(hex: &str) -> Option<SocketAddrV4> {
        let (ip, port) = hex.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
    }
    const TIME_WAIT: &str = "06";
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp readable");
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let (local, remote) = (parse(fields.get(1)?)?, parse(fields.get(2)?)?);
            (*fields.get(3)? == TIME_WAIT && (local == addr || remote == addr))
                .then_some((local, remote))
        })
        .collect()
}

unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

/// Reads the `summary.json` in `dir` and checks it against the committed JSON Schema: every
/// summary a test reads goes through here.
pub fn summary(dir: &std::path::Path) -> serde_json::Value {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} not written: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schema: serde_json::Value = serde_json::from_str(bulk_report::summary::SCHEMA).unwrap();
    if let Err(errors) = bulk_report::schema::validate(&schema, &value) {
        panic!("{} does not match its schema: {errors:#?}", path.display());
    }
    value
}

/// [`summary`] of every run a `compare` saved under `out/runs/`; how many there were.
pub fn check_compare_runs(out: &std::path::Path) -> usize {
    let runs = std::fs::read_dir(out.join("runs")).expect("compare saves its runs");
    let mut checked = 0;
    for run in runs.flatten() {
        summary(&run.path());
        checked += 1;
    }
    checked
}

/// `bulkbench load SCENARIO --target SERVER --out OUT --quiet EXTRA...`.
pub fn load(
    scenario: &std::path::Path,
    server: &Server,
    out: &std::path::Path,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "load",
        scenario.to_str().unwrap(),
        "--target",
        &server.addr,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend(extra);
    run(&args)
}

/// A small scenario (4,000 mailboxes, 300 sessions): a store in a second, a run in one.
pub const SMALL_SCENARIO: &str = r#"
name = "backends-test"
seed = 21
[population]
mailboxes = 4000
domains = 25
[workload]
mode = "closed"
sessions = 300
concurrency = 10
recipients_max = 20
message_size_min = 200
message_size_max = 1000
warmup_secs = 0.0
"#;

/// [`SMALL_SCENARIO`], written into `dir`.
pub fn small_scenario(dir: &Path) -> PathBuf {
    let path = dir.join("backends-test.toml");
    std::fs::write(&path, SMALL_SCENARIO).unwrap();
    path
}

/// One bulk transaction: the reply codes ("250 2.1.5") of RCPTs to `rcpts`.
pub fn bulk_replies(addr: &str, rcpts: &[&str]) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut read_reply = || {
        let last = loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break line;
            }
        };
        last.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ")
    };
    read_reply();
    let mut send = |line: &str| stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    send("EHLO test.example");
    read_reply();
    send("BULK FROM:<news@shop.test>");
    read_reply();
    let mut out = Vec::new();
    for rcpt in rcpts {
        send(&format!("RCPT TO:<{rcpt}>"));
        out.push(read_reply());
    }
    send("QUIT");
    out
}

/// A mailbox of the scenario's population with an explicit `in` preference.
pub fn opted_in_mailbox(scenario: &Path) -> String {
    let file = scenario.with_extension("tsv");
    build_population(scenario, None, &file);
    std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .find_map(|line| {
            line.strip_suffix("\tin")
                .filter(|a| !a.starts_with('@'))
                .map(str::to_owned)
        })
        .expect("an opted-in mailbox")
}

/// What a test does when its tool is missing: fails where every tool is required
/// (`BULKBENCH_REQUIRE_EXTERNAL=1`, as CI runs), else reports itself ignored, naming the
/// package and how to install it.
pub fn missing(package: &str, install: &str) -> Result<Completion, Failed> {
    if std::env::var_os("BULKBENCH_REQUIRE_EXTERNAL").is_some_and(|v| v == "1") {
        return Err(format!(
            "{package} is required (BULKBENCH_REQUIRE_EXTERNAL=1) but missing: {install}"
        )
        .into());
    }
    Ok(Completion::ignored_with(format!(
        "needs {package}, which is missing: {install}"
    )))
}
