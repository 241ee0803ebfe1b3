//! What the CLI tests share: running the real binary with a deadline, and `serve` children
//! that are killed when dropped.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bulkbench serve --listen 127.0.0.1:0 ARGS...` and waits for its line.
pub fn serve(args: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve {args:?}: {line:?}"))
        .to_owned();
    Server { child, addr }
}

/// Sends `signal` to a child.
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { kill(child.id() as i32, signal) };
}

unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}
