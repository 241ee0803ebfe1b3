//! `bulkbench bench`, `load`, `population` and `simulate` as a user runs them.

use std::io::Read as _;
use std::net::SocketAddrV4;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{
    BIN, Lines, build_population, children_of, ended_connections, exits_within, load, run, serve,
    signal_group, stat_field, summary, wait_until,
};

const SCENARIO: &str = r#"
name = "tiny"
seed = 3
[population]
mailboxes = 3000
domains = 30
[workload]
mode = "closed"
sessions = 400
concurrency = 20
recipients_min = 1
recipients_max = 30
message_size_min = 300
message_size_max = 3000
warmup_secs = 0.0
timeout_ms = 5000
"#;

fn write_scenario(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, SCENARIO).unwrap();
    path
}

#[test]
fn bench_answers_every_rcpt_with_no_mismatch_and_writes_a_valid_report() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path());
    let out = dir.path().join("report");
    let trace = dir.path().join("trace.jsonl");
    let output = run(&[
        "bench",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--save-trace",
        trace.to_str().unwrap(),
        "--quiet",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let s = summary(&out);
    assert_eq!(s["command"], "bench");
    assert_eq!(s["mismatches"]["total"], 0);
    assert_eq!(s["totals"]["sessions"], 400);
    assert_eq!(s["totals"]["sessions_completed"], 400);
    assert_eq!(s["totals"]["rcpts"], s["expected"]["rcpts"]);
    assert_eq!(s["totals"]["sessions_failed"], 0);
    assert_eq!(s["scenario"]["name"], "tiny");
    assert!(
        s["server"]["cpu_seconds"].as_f64().unwrap() > 0.0,
        "{}",
        s["server"]
    );
    assert!(s["server"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(s["throughput"]["rcpt_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(s["latency_us"]["rcpt"]["count"], s["totals"]["rcpts"]);
    for phase in ["connect", "rcpt", "session", "schedule_lag"] {
        let hgrm = std::fs::read_to_string(out.join(format!("{phase}.hgrm"))).unwrap();
        assert!(hgrm.contains("Percentile"), "{phase}.hgrm");
    }
    assert!(stdout.contains("RCPT/s"), "{stdout}");
    // Server and generator ran on CPUs of their own, which together are this machine's.
    let cpus = |side: &str| -> Vec<u64> {
        s["target"][side]
            .as_array()
            .map(|a| a.iter().map(|c| c.as_u64().unwrap()).collect())
            .unwrap_or_default()
    };
    let allowed: Vec<u64> = bulk_loadgen::allowed_cpus()
        .into_iter()
        .map(|c| c as u64)
        .collect();
    if allowed.len() >= 2 {
        let (server, generator) = (cpus("server_cpus"), cpus("generator_cpus"));
        assert!(
            !server.is_empty() && !generator.is_empty(),
            "{}",
            s["target"]
        );
        // Each side's CPUs were busy in the window, and the split by kind adds up.
        for (side, cpus) in [("server", &server), ("generator", &generator)] {
            let set = &s[side]["cpu_set"];
            assert_eq!(set["cpus"].as_array().unwrap().len(), cpus.len(), "{set}");
            let busy = set["busy_seconds"].as_f64().unwrap();
            assert!(busy > 0.0, "{side}: {set}");
            let parts: f64 = ["user", "system", "irq", "softirq"]
                .iter()
                .map(|kind| set[format!("{kind}_seconds")].as_f64().unwrap())
                .sum();
            // (All zero when no tick fell in a very short window.)
            assert!((parts - busy).abs() < 1e-9 || parts == 0.0, "{side}: {set}");
        }
        // The whole server process is pinned: its CPUs were at least as busy as it was
        // (slack for /proc/stat's tick sampling against the scheduler's exact runtime).
        let set = s["server"]["cpu_set"]["busy_seconds"].as_f64().unwrap();
        let process = s["server"]["cpu_seconds"].as_f64().unwrap();
        assert!(set * 1.1 + 0.05 >= process, "{set} {process}");
        assert_eq!([server, generator].concat(), allowed);
        assert!(stdout.contains(", server on CPU"), "{stdout}");
        assert!(stdout.contains("busy s,"), "{stdout}");
    } else {
        assert!(s["target"]["server_cpus"].is_null());
    }
    // An existing report folder is never overwritten.
    let again = run(&[
        "bench",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("exists already"), "{stderr}");
    // Refused before any work, not after a whole run.
    assert!(!stderr.contains("server ready"), "{stderr}");

    // Replaying the saved trace does exactly the same work.
    let replay = dir.path().join("replay");
    let output = run(&[
        "bench",
        scenario.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--out",
        replay.to_str().unwrap(),
        "--quiet",
        "--no-pin",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = summary(&replay);
    assert!(r["target"]["server_cpus"].is_null() && r["target"]["generator_cpus"].is_null());
    assert!(r["server"]["cpu_set"].is_null() && r["generator"]["cpu_set"].is_null());
    assert_eq!(r["expected"], s["expected"]);
    assert_eq!(r["totals"]["by_class"], s["totals"]["by_class"]);

    // A trace replayed with another scenario is refused before anything runs: its replies
    // would be judged by the wrong verdicts. Another seed (so another population), and the
    // same name and seed with the population edited.
    for (name, text, refusal) in [
        (
            "other",
            SCENARIO.replace("seed = ", "seed = 1"),
            "was drawn from scenario",
        ),
        (
            "edited",
            SCENARIO.replace("mailboxes = 3000", "mailboxes = 3001"),
            "population with other parameters",
        ),
    ] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let output = run(&[
            "bench",
            path.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--out",
            dir.path().join(name).to_str().unwrap(),
            "--quiet",
        ]);
        assert!(!output.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(refusal), "{stderr}");
        assert!(!stderr.contains("server ready"), "{stderr}");
    }
}

#[test]
fn load_drives_an_external_server_and_reports_no_server_cost() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path());
    let population = dir.path().join("population.tsv");
    build_population(&scenario, None, &population);
    let server = serve(&["--population", population.to_str().unwrap()]);
    let out = dir.path().join("report");
    let output = load(&scenario, &server, &out, &["--generator-threads", "1"]);
    drop(server);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let s = summary(&out);
    assert_eq!(s["command"], "load");
    assert!(s["server"].is_null());
    assert_eq!(s["target"]["external"], true);
    assert_eq!(s["mismatches"]["total"], 0);
    assert_eq!(s["totals"]["sessions_completed"], 400);
    // The kernel's listen-queue counters were read around the run, where it has them.
    if std::path::Path::new("/proc/net/netstat").exists() {
        assert!(s["listen_queue"]["overflows"].is_u64(), "{s}");
    }
    // The generator ran on the one thread asked for, and the report says so.
    assert_eq!(s["generator"]["event_loops"], 1, "{s}");
    let report = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(report.contains("generator (1 thread):"), "{report}");
}

/// Named processes of an external server are measured as its cost: CPU and memory, with
/// no startup (the run did not start it), and the report says which processes.
#[test]
fn load_measures_the_processes_of_an_external_server_when_named() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path());
    let population = dir.path().join("population.tsv");
    build_population(&scenario, None, &population);
    let server = serve(&["--population", population.to_str().unwrap()]);
    let pid = server.child.id().to_string();
    let out = dir.path().join("report");
    let output = load(&scenario, &server, &out, &["--server-pid", &pid]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let s = summary(&out);
    assert_eq!(s["target"]["external"], true);
    assert_eq!(s["target"]["processes"][0].to_string(), pid);
    assert!(
        s["server"]["cpu_us_per_rcpt"].as_f64().unwrap() > 0.0,
        "{s}"
    );
    assert!(
        s["server"]["peak_rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{s}"
    );
    assert!(s["server"]["startup_secs"].is_null(), "{s}");
    // By default, one generator thread per CPU it may use.
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(s["generator"]["event_loops"], cpus, "{s}");
    let report = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        report.contains(&format!("measured on processes {pid}")),
        "{report}"
    );

    // A process that is not running is refused before the run.
    let output = load(
        &scenario,
        &server,
        &dir.path().join("r2"),
        &["--server-pid", "4294967295"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no process 4294967295"));
    drop(server);
}

#[test]
fn mismatches_make_the_run_fail_and_are_printed_first() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path());
    let population = dir.path().join("population.tsv");
    build_population(&scenario, None, &population);
    // Serve with case-sensitive local parts: recipients written in mixed case are then
    // unknown, which contradicts the population.
    let server = serve(&[
        "--case-sensitive-local-part",
        "--population",
        population.to_str().unwrap(),
    ]);
    let out = dir.path().join("report");
    let output = load(&scenario, &server, &out, &[]);
    drop(server);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("MISMATCHES: "), "{stdout}");
    let s = summary(&out);
    assert!(s["mismatches"]["total"].as_u64().unwrap() > 0);
}

/// `bench SCENARIO --out OUT`, which must succeed; its summary.
fn bench_summary(scenario: &Path, out: &Path) -> serde_json::Value {
    let output = run(&[
        "bench",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    summary(out)
}

/// A scenario for a target that applies preferences to every transaction: `bench` starts
/// its server so (`--preferences-apply-to all`), and every reply, MAIL's included, verifies;
/// a server applying them to BULK only contradicts it.
#[test]
fn preferences_applied_to_all_mail_verify_against_serve_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("all-mail.toml");
    let text = SCENARIO.replace("[workload]\n", "[workload]\nbulk_share = 0.0\n")
        + "[server]\npreferences_apply_to = \"all\"\n";
    std::fs::write(&scenario, text).unwrap();
    let s = bench_summary(&scenario, &dir.path().join("bench"));
    assert_eq!(s["mismatches"]["total"], 0);
    assert!(
        s["totals"]["by_class"]["opted_out"].as_u64().unwrap() > 0,
        "{s}"
    );

    let population = dir.path().join("population.tsv");
    build_population(&scenario, None, &population);
    let server = serve(&["--population", population.to_str().unwrap()]);
    let out = dir.path().join("load");
    let output = load(&scenario, &server, &out, &[]);
    drop(server);
    assert_eq!(
        output.status.code(),
        Some(3),
        "opted-out mailboxes accepted under MAIL"
    );
}

/// STARTTLS end to end: `bench` starts `serve --tls self-signed` for a workload with
/// STARTTLS sessions, and half the sessions (by the seed) run their transactions under TLS,
/// every reply verified; the handshake is a phase of its own.
#[test]
fn bench_runs_starttls_sessions_against_serve_and_verifies_them() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("tls.toml");
    let text = SCENARIO
        .replace("[workload]\n", "[workload]\nstarttls_share = 0.5\n")
        .replace("sessions = 400", "sessions = 100");
    std::fs::write(&scenario, text).unwrap();
    let s = bench_summary(&scenario, &dir.path().join("bench"));
    assert_eq!(s["mismatches"]["total"], 0, "{s}");
    assert_eq!(s["totals"]["sessions_completed"], 100, "{s}");
    let tls = s["totals"]["starttls_sessions"].as_u64().unwrap();
    assert!(
        (30..=70).contains(&tls),
        "{tls} of 100 sessions used STARTTLS"
    );
    assert_eq!(
        s["latency_us"]["tls_handshake"]["count"].as_u64(),
        Some(tls),
        "{s}"
    );
}

#[test]
fn simulate_runs_the_workload_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path());
    let output = run(&["simulate", scenario.to_str().unwrap(), "--threads", "2"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("simulated 400 sessions"), "{stdout}");
    assert!(stdout.contains("(0 failed sessions)"), "{stdout}");
    assert!(stdout.contains("ns CPU per RCPT"), "{stdout}");
}

#[test]
fn bad_scenarios_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\n[workload]\nsessions = 10\nconcurrency = \"many\"\n",
    )
    .unwrap();
    let output = run(&["bench", path.to_str().unwrap(), "--quiet"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 4") && stderr.contains("concurrency"),
        "{stderr}"
    );
}

/// A `bench` or `compare` started by [`start_long`], in a process group of its own like a
/// job a shell runs in the foreground. Killed, with its group, if a test fails half-way.
struct LongRun {
    child: Child,
    stderr: Option<Lines>,
    /// Its report folder.
    out: PathBuf,
}

/// How long a test waits for a state a long run reaches in well under a second when the
/// machine is idle: only a hang takes this long, or a machine far busier than any test
/// should meet.
const PATIENCE: Duration = Duration::from_secs(120);

impl LongRun {
    /// Waits until the run measures: its server is ready and has ended `sessions` sessions
    /// with the generator. Returns the server's pid.
    fn wait_until_measuring(&self, sessions: usize) -> u32 {
        let stderr = self.stderr.as_ref().unwrap();
        // Logged once `bulkbench serve` has printed `listening on`, just before the load
        // starts: `... server ready addr=127.0.0.1:PORT startup_ms=...`.
        let ready = stderr.wait_for("server ready", PATIENCE);
        let addr: SocketAddrV4 = ready
            .split_whitespace()
            .find_map(|field| field.strip_prefix("addr="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {ready:?}"));
        // Connections to this port from before the server took it do not count.
        let stale = ended_connections(addr);
        wait_until(
            PATIENCE,
            &format!("{sessions} sessions ended at {addr}"),
            || ended_connections(addr).difference(&stale).count() >= sessions,
        );
        *children_of(self.child.id())
            .first()
            .expect("the server is bulkbench's child")
    }

    /// Waits for the exit (up to [`PATIENCE`], which only a hang needs); returns the exit
    /// status, stdout and stderr.
    fn finish(&mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {PATIENCE:?} after the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        (status, stdout, self.stderr.take().unwrap().all())
    }
}

impl Drop for LongRun {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|status| status.is_none()) {
            signal_group(&self.child, 9);
            let _ = self.child.wait();
        }
    }
}

/// Starts `bench` on an open loop of 60 s at a gentle rate (far longer than a test waits).
fn start_long_bench(dir: &Path) -> LongRun {
    start_long(dir, &["bench"])
}

/// [`start_long_bench`] for any command that takes a scenario (`command` and its options).
fn start_long(dir: &Path, command: &[&str]) -> LongRun {
    let path = dir.join("long.toml");
    std::fs::write(
        &path,
        "name = \"long\"\n[population]\nmailboxes = 2000\ndomains = 10\n\
         [workload]\nmode = \"open\"\nrate_per_sec = 100.0\nduration_secs = 60.0\n\
         warmup_secs = 0.0\nrecipients_max = 5\n",
    )
    .unwrap();
    let out = dir.join("report");
    let mut child = Command::new(BIN)
        .args(command)
        .args([
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ])
        // The log lines the tests wait for are at `info`, the default.
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = Some(Lines::read(child.stderr.take().unwrap()));
    LongRun { child, stderr, out }
}

#[test]
fn ctrl_c_stops_the_run_and_still_writes_what_was_measured() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = start_long_bench(dir.path());
    let server = job.wait_until_measuring(20);
    // The server is in a group of its own, so a terminal's Ctrl-C does not reach it. (It
    // joins that group between fork and exec, so by `server ready` it is in it.)
    let group = |pid| stat_field(pid, 5).expect("running");
    assert_ne!(
        group(server),
        group(job.child.id()),
        "the server is in bulkbench's process group"
    );
    // SIGINT to the whole group, as a terminal sends it: only bulkbench gets it, and it
    // stops the server itself after the run.
    signal_group(&job.child, 2);
    let (status, _, stderr) = job.finish();
    assert!(status.success(), "{stderr}");
    let s = summary(&job.out);
    assert_eq!(s["window"]["interrupted"], true);
    // Stopped at the Ctrl-C, not at the end of its 60 s (a bound in the program's own
    // time, which only a run that went on reaches).
    let elapsed = s["window"]["elapsed_secs"].as_f64().unwrap();
    assert!(elapsed < 50.0, "the run went on after Ctrl-C: {elapsed} s");
    let done = s["totals"]["sessions_completed"].as_u64().unwrap();
    assert!(done > 0 && done < 6000, "{done} sessions");
    assert_eq!(s["mismatches"]["total"], 0);
    // The server served to the end of the run: nothing failed, and it was there to be
    // measured.
    assert_eq!(s["totals"]["sessions_failed"], 0, "{}", s["errors"]);
    assert!(s["server"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(exits_within(server, Duration::from_secs(5)));
}

#[test]
fn a_bench_killed_outright_leaves_no_server_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = start_long_bench(dir.path());
    // Killed in the middle of its run, while the server serves.
    let server = job.wait_until_measuring(1);
    assert!(!exits_within(server, Duration::ZERO), "the server runs");
    job.child.kill().unwrap(); // SIGKILL: no chance to stop the server itself
    job.child.wait().unwrap();
    let gone = exits_within(server, Duration::from_secs(10));
    if !gone {
        // SAFETY: kill(2) on the orphaned server this test started, so none is left behind.
        unsafe { libc::kill(server as i32, libc::SIGKILL) };
    }
    assert!(gone, "the server outlived bulkbench");
}

#[test]
fn ctrl_c_stops_a_comparison_between_runs_too() {
    // Two arms, two repeats of 60 s each: a Ctrl-C during the first run must end the
    // comparison, not just that run.
    let dir = tempfile::tempdir().unwrap();
    let mut job = start_long(
        dir.path(),
        &[
            "compare",
            "--backend",
            "memory",
            "--backend",
            "fst",
            "--repeat",
            "2",
        ],
    );
    job.wait_until_measuring(20);
    signal_group(&job.child, 2); // SIGINT, as a terminal sends it
    // The three runs left would take three minutes: `finish` gives up long before.
    let (status, stdout, _) = job.finish();
    // No arm completed a run, so each is reported as failed by the interruption.
    assert_eq!(status.code(), Some(5), "{stdout}");
    let out = &job.out;
    let text = std::fs::read_to_string(out.join("comparison.json")).unwrap();
    let comparison: bulk_report::compare::Comparison = serde_json::from_str(&text).unwrap();
    for arm in &comparison.arms {
        let error = arm.error.as_deref().unwrap_or("");
        assert!(error.contains("interrupted"), "{}: {text}", arm.name);
    }
    // The run that was cut short is kept, marked as such; none was started after it.
    let runs: Vec<_> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .flatten()
        .map(|run| run.path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(summary(&runs[0])["window"]["interrupted"], true);
}

/// `load` against `target` (HOST:PORT) with the report in `out`.
fn load_at(scenario: &Path, target: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "load",
        scenario.to_str().unwrap(),
        "--target",
        target,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend(extra);
    run(&args)
}

#[test]
fn failed_sessions_fail_the_run_unless_a_share_of_them_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path());
    // A port nothing listens on: every session is refused.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let out = dir.path().join("dead");
    let output = load_at(&scenario, &dead, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("FAILED: 400 of 400 sessions failed"),
        "{stderr}"
    );
    // The report is written and says why.
    let s = summary(&out);
    assert_eq!(s["errors"]["connect_refused"], 400);
    // Allowing every session to fail makes the same run pass.
    let out = dir.path().join("allowed");
    let output = load_at(&scenario, &dead, &out, &["--max-failed-share", "1"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for bad in ["1.5", "-0.1", "x"] {
        let out = dir.path().join(format!("bad{bad}"));
        let flag = format!("--max-failed-share={bad}");
        let output = load_at(&scenario, &dead, &out, &[&flag]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("is not a share from 0 to 1"), "{stderr}");
    }
}

#[test]
fn a_run_that_ends_during_its_warm_up_is_an_error_not_a_zero() {
    let dir = tempfile::tempdir().unwrap();
    let population = dir.path().join("population.tsv");
    let closed = dir.path().join("closed.toml");
    // 400 sessions take well under the 60 s of warm-up.
    std::fs::write(
        &closed,
        SCENARIO.replace("warmup_secs = 0.0", "warmup_secs = 60.0"),
    )
    .unwrap();
    build_population(&closed, None, &population);
    let server = serve(&["--population", population.to_str().unwrap()]);
    let out = dir.path().join("closed-report");
    let output = load(&closed, &server, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the run ended during its warm-up")
            && stderr.contains("lower warmup_secs or raise sessions/duration_secs"),
        "{stderr}"
    );
    assert!(!out.exists(), "no report of a run that measured nothing");
    // An open loop whose every session starts within the warm-up is refused before it
    // runs: 10 sessions at 1,000/s all start in the first 60 s.
    let open = dir.path().join("open.toml");
    std::fs::write(
        &open,
        SCENARIO
            .replace("warmup_secs = 0.0", "warmup_secs = 60.0")
            .replace("mode = \"closed\"", "mode = \"open\"\nrate_per_sec = 1000")
            .replace("sessions = 400\nconcurrency = 20", "sessions = 10"),
    )
    .unwrap();
    let started = Instant::now();
    let out = dir.path().join("open-report");
    let output = load(&open, &server, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("every session starts during the warm-up"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused before the run"
    );
    drop(server);
}

#[test]
fn a_closed_loop_sized_in_time_runs_its_time_and_saves_what_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("timed.toml");
    std::fs::write(
        &scenario,
        SCENARIO
            .replace("sessions = 400", "duration_secs = 2.5")
            .replace("warmup_secs = 0.0", "warmup_secs = 0.5"),
    )
    .unwrap();
    let out = dir.path().join("report");
    let trace = dir.path().join("trace.jsonl");
    common::ok(&[
        "bench",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--save-trace",
        trace.to_str().unwrap(),
        "--quiet",
    ]);
    let s = summary(&out);
    // Sessions start until 2.5 s; those in flight then finish: a window of 2 s and a bit.
    // (Timed by the program itself: the wall clock of a shared machine tells nothing here,
    // and `common::run` gives up on a hang.)
    let window = s["window"]["measured_secs"].as_f64().unwrap();
    assert!((2.0..4.0).contains(&window), "window {window} s");
    let started_sessions = s["totals"]["sessions"].as_u64().unwrap()
        + s["warmup_totals"]["sessions"].as_u64().unwrap();
    assert_eq!(s["expected"]["sessions"].as_u64(), Some(started_sessions));
    assert!(
        started_sessions > 20,
        "{started_sessions} sessions in 2.5 s"
    );
    // The trace holds the pool the run cycled through and how many sessions it started,
    // and replays exactly that.
    let text = std::fs::read_to_string(&trace).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["runs"].as_u64(), Some(started_sessions), "{header}");
    assert_eq!(
        header["sessions"].as_u64(),
        Some(text.lines().count() as u64 - 1),
        "{header}"
    );
    // The interval series resolves the short window: intervals of 100 ms, many of them after
    // the warm-up. (Not one for each 100 ms of the window: an interval in which no RCPT
    // was answered is not written, and on a busy machine a run can stall that long.)
    let hlog = std::fs::read_to_string(out.join("intervals.hlog")).unwrap();
    let intervals: Vec<(f64, f64)> = hlog
        .lines()
        .filter_map(|l| l.strip_prefix("Tag=rcpt,"))
        .filter_map(|l| {
            let mut fields = l.split(',');
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect();
    // (The last one ends with the run, so it may be shorter.)
    for (start, length) in &intervals {
        assert!(*length <= 0.1 + 1e-9, "{length} s long at {start} s");
    }
    let in_window = intervals.iter().filter(|(start, _)| *start >= 0.5).count();
    assert!(in_window >= 10, "{in_window} RCPT intervals in the window");
    let replay = dir.path().join("replay");
    common::ok(&[
        "bench",
        scenario.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--out",
        replay.to_str().unwrap(),
        "--quiet",
    ]);
    let r = summary(&replay);
    assert_eq!(r["expected"]["sessions"].as_u64(), Some(started_sessions));
    assert_eq!(r["totals"]["sessions_completed"], r["totals"]["sessions"]);
}

#[test]
fn starttls_sessions_against_a_server_without_it_fail_by_kind_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("tls.toml");
    std::fs::write(
        &scenario,
        SCENARIO.replace("[workload]", "[workload]\nstarttls_share = 0.25"),
    )
    .unwrap();
    let population = dir.path().join("population.tsv");
    build_population(&scenario, None, &population);
    let server = serve(&["--population", population.to_str().unwrap()]);
    let out = dir.path().join("report");
    // `localhost` by name: the name is kept for the TLS sessions' SNI.
    let port = server.addr.rsplit_once(':').unwrap().1;
    let target = format!("localhost:{port}");
    let output = load_at(&scenario, &target, &out, &["--max-failed-share", "0.5"]);
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let s = summary(&out);
    let tls = s["totals"]["starttls_sessions"].as_u64().unwrap();
    assert!((60..=140).contains(&tls), "{tls} of 400");
    // The server does not offer STARTTLS: exactly those sessions failed, by that kind.
    assert_eq!(s["errors"]["starttls_not_offered"], tls);
    assert_eq!(s["totals"]["sessions_completed"], 400 - tls);
    assert_eq!(s["mismatches"]["total"], 0);
    assert_eq!(s["scenario"]["workload"]["starttls_share"], 0.25);
    assert!(
        stdout.contains(&format!("{tls} of 400 sessions (")),
        "{stdout}"
    );
    assert!(stdout.contains("starttls_not_offered"), "{stdout}");
}

#[test]
fn tls_verification_needs_a_readable_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path());
    let out = dir.path().join("report");
    // Each flag needs the other: a usage error, before anything runs.
    for flags in [&["--tls-verify"][..], &["--tls-ca", "ca.pem"][..]] {
        let output = load_at(&scenario, "127.0.0.1:9", &out, flags);
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--tls-"), "{stderr}");
    }
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "no certificate here\n").unwrap();
    let output = load_at(
        &scenario,
        "127.0.0.1:9",
        &out,
        &["--tls-verify", "--tls-ca", not_pem.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--tls-ca") && stderr.contains("holds no CERTIFICATE"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing ran");
}
