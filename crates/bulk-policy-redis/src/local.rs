//! Throwaway Redis servers on loopback for tests and benchmarks: [`LocalRedis`] (one
//! server) and [`LocalRedisCluster`] (a cluster of masters).
//!
//! Each runs `redis-server` as a child process in a folder of its own, bound to 127.0.0.1
//! on a free port, persistence off (`--save '' --appendonly no`), and is shut down by
//! `stop` or on drop. Waits are bounded: start-up, cluster creation and shutdown each give
//! up after a fixed time.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::RedisStoreError;

/// How long a server may take to answer PING after its start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster may take to be created and reach `cluster_state:ok` on every node.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SHUTDOWN before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two polls of a starting or stopping server.
const POLL: Duration = Duration::from_millis(20);
/// Attempts at a free port before giving up (another process may take the one found
/// between the probe and the server's bind).
const PORT_ATTEMPTS: usize = 5;

/// A throwaway `redis-server` on 127.0.0.1, persistence off, its files (log) in a folder
/// of its own; shut down by [`stop`](Self::stop) or on drop.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl LocalRedis {
    /// Starts a server in `dir` (created if missing) on a free loopback port and waits
    /// until it answers PING. [`RedisStoreError::NotInstalled`] if `redis-server` is not
    /// installed.
    pub fn start(dir: &Path) -> Result<LocalRedis, RedisStoreError> {
        Self::start_with(dir, |_| Vec::new())
    }

    /// Starts a server with extra arguments, which depend on the port pair it got (the
    /// client port and a second free port, for a cluster bus).
    fn start_with(
        dir: &Path,
        extra: impl Fn((u16, u16)) -> Vec<String>,
    ) -> Result<LocalRedis, RedisStoreError> {
        installed("redis-server", "redis-server")?;
        std::fs::create_dir_all(dir)
            .map_err(|e| local(format!("create {}: {e}", dir.display())))?;
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let ports = free_ports()?;
            let log = dir.join("redis.log");
            let _ = std::fs::remove_file(&log);
            let mut child = Command::new("redis-server")
                .args(["--port", &ports.0.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                // A load's RENAME over a big hash frees the old one in the background.
                .args(["--lazyfree-lazy-server-del", "yes"])
                .args(["--logfile", "redis.log"])
                .args(extra(ports))
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| local(format!("cannot run redis-server: {e}")))?;
            match wait_ready(&mut child, ports.0, &log) {
                Ok(()) => {
                    return Ok(LocalRedis {
                        child: Some(child),
                        port: ports.0,
                        dir: dir.to_path_buf(),
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = e;
                    if !last.contains("in use") {
                        break;
                    }
                }
            }
        }
        Err(local(format!("redis-server did not start: {last}")))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The folder holding the server's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Shuts the server down (`SHUTDOWN NOSAVE`, then a kill if it has not exited within
    /// a few seconds) and waits for it to exit.
    pub fn stop(mut self) -> Result<(), RedisStoreError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), RedisStoreError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // The connection drops as the server exits: no reply is expected.
        let _ = command(self.port, &["SHUTDOWN", "NOSAVE"]);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => return Err(local(format!("wait for redis-server: {e}"))),
            }
        }
        child
            .kill()
            .and_then(|()| child.wait().map(drop))
            .map_err(|e| local(format!("kill redis-server {}: {e}", child.id())))
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// A throwaway Redis Cluster of masters on 127.0.0.1, no replicas, each node a
/// [`LocalRedis`] in a folder of its own (`node-0`, `node-1`, ...), created with
/// `redis-cli --cluster create` and waited for until every node reports
/// `cluster_state:ok`.
#[derive(Debug)]
pub struct LocalRedisCluster {
    nodes: Vec<LocalRedis>,
}

impl LocalRedisCluster {
    /// Starts `nodes` masters (at least 3, as Redis Cluster requires) under `dir` and
    /// creates the cluster. [`RedisStoreError::NotInstalled`] if `redis-server` or
    /// `redis-cli` is not installed.
    pub fn start(dir: &Path, nodes: usize) -> Result<LocalRedisCluster, RedisStoreError> {
        if nodes < 3 {
            return Err(local(format!(
                "a Redis Cluster needs at least 3 masters, {nodes} asked"
            )));
        }
        // redis-server first: where neither is installed, its package is the one to name
        // (Debian's redis-server brings redis-tools, not the other way round).
        installed("redis-server", "redis-server")?;
        installed("redis-cli", "redis-tools")?;
        let mut cluster = LocalRedisCluster { nodes: Vec::new() };
        for i in 0..nodes {
            let node = LocalRedis::start_with(&dir.join(format!("node-{i}")), |(_, bus)| {
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--cluster-port",
                    &bus.to_string(),
                ]
                .map(String::from)
                .to_vec()
            })?;
            cluster.nodes.push(node);
        }
        cluster.create(dir)?;
        Ok(cluster)
    }

    /// Runs `redis-cli --cluster create` (bounded in time), then waits for every node.
    fn create(&self, dir: &Path) -> Result<(), RedisStoreError> {
        let output = dir.join("cluster-create.log");
        let file = std::fs::File::create(&output)
            .map_err(|e| local(format!("create {}: {e}", output.display())))?;
        let err = file
            .try_clone()
            .map_err(|e| local(format!("{}: {e}", output.display())))?;
        let mut child = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| local(format!("cannot run redis-cli: {e}")))?;
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(local(format!(
                        "redis-cli --cluster create did not finish within {CLUSTER_TIMEOUT:?}"
                    )));
                }
                Err(e) => return Err(local(format!("wait for redis-cli: {e}"))),
            }
        };
        if !status.success() {
            return Err(local(format!(
                "redis-cli --cluster create failed ({status}): {}",
                tail(&output)
            )));
        }
        for node in &self.nodes {
            loop {
                let info = command(node.port, &["CLUSTER", "INFO"]).unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(local(format!(
                        "node 127.0.0.1:{} not in cluster_state:ok within {CLUSTER_TIMEOUT:?}",
                        node.port
                    )));
                }
                std::thread::sleep(POLL);
            }
        }
        Ok(())
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(LocalRedis::url).collect()
    }

    /// The nodes' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(LocalRedis::pid).collect()
    }

    /// The nodes, to stop one (a node failure) or read its port.
    pub fn nodes(&self) -> &[LocalRedis] {
        &self.nodes
    }

    /// Shuts every node down; the first error, after trying them all.
    pub fn stop(self) -> Result<(), RedisStoreError> {
        let mut first = Ok(());
        for node in self.nodes {
            let result = node.stop();
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

fn local(what: String) -> RedisStoreError {
    RedisStoreError::Local { what }
}

/// [`RedisStoreError::NotInstalled`] unless `program --version` runs.
fn installed(program: &'static str, package: &'static str) -> Result<(), RedisStoreError> {
    match Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(RedisStoreError::NotInstalled { program, package })
        }
        Err(e) => Err(local(format!("cannot run {program}: {e}"))),
    }
}

/// Two loopback ports free at the time of asking (both probed at once, so distinct).
fn free_ports() -> Result<(u16, u16), RedisStoreError> {
    let probe = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| local(format!("no free loopback port: {e}")))
    };
    let (a, b) = (probe()?, probe()?);
    let port = |l: &TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| local(format!("probe port: {e}")))
    };
    Ok((port(&a)?, port(&b)?))
}

/// Waits until the server answers PING; the reason (with the log's end) if it exits or
/// does not answer in time.
fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited ({status}): {}", tail(log)));
        }
        if command(port, &["PING"]).is_ok_and(|reply| reply == "PONG") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no PONG on 127.0.0.1:{port} within {START_TIMEOUT:?}: {}",
                tail(log)
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Sends one command to 127.0.0.1:`port` and returns its reply's text: a status or bulk
/// string (an error reply is an `Err`). For start-up and cluster checks only: it reads
/// what simple replies need, with short timeouts.
fn command(port: u16, args: &[&str]) -> io::Result<String> {
    let timeout = Duration::from_millis(500);
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // A reply of at most 64 KiB, read in at most 64 reads.
    for _ in 0..64 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(text) = complete(&reply)? {
            return Ok(text);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "incomplete reply",
    ))
}

/// The text of a complete status or bulk reply; `None` if more bytes are needed.
fn complete(reply: &[u8]) -> io::Result<Option<String>> {
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&reply[1..end]).into_owned();
    match reply.first() {
        Some(b'+') => Ok(Some(line)),
        Some(b'-') => Err(io::Error::other(line)),
        Some(b'$') => {
            let len: usize = line
                .parse()
                .map_err(|_| io::Error::other("bad bulk length"))?;
            let body = &reply[end + 2..];
            Ok((body.len() >= len + 2).then(|| String::from_utf8_lossy(&body[..len]).into_owned()))
        }
        _ => Err(io::Error::other("unexpected reply")),
    }
}
