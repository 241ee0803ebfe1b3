//! [`LocalPostgres`]: a throwaway PostgreSQL cluster for tests and benchmarks.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::PostgresStoreError;

/// The Debian package that ships the server programs.
const PACKAGE: &str = "postgresql";
/// The superuser initdb creates, and the URL connects as.
const USER: &str = "bulk";
/// Ports tried before giving up, should another process take the free port first.
const PORT_ATTEMPTS: usize = 5;
/// How long the server may take to become ready, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between two looks at a starting or stopping server.
const POLL: Duration = Duration::from_millis(20);
/// Bytes of a program's output or of the server log quoted in an error.
const OUTPUT_TAIL: usize = 2_000;

/// A throwaway PostgreSQL cluster: `initdb` in a folder, a server on a free loopback port
/// with `fsync` off and its Unix socket in that folder, superuser `bulk` with no password
/// (trust authentication, loopback only).
///
/// Run as root, the programs run as the unprivileged `postgres` user (initdb refuses
/// root), after the folder is handed to that user. The server is a child of this process:
/// [`stop`](LocalPostgres::stop) or drop stops it (`pg_ctl -m fast`, then a kill if it is
/// still running after 30 s). Removing the folder is the caller's business (a
/// `tempfile::TempDir` dropped after this).
#[derive(Debug)]
pub struct LocalPostgres {
    /// The postmaster; `None` once stopped.
    server: Option<Child>,
    programs: Programs,
    data: PathBuf,
    port: u16,
    /// `(uid, gid)` of the `postgres` user when this process is root.
    run_as: Option<(u32, u32)>,
}

/// Where the server programs are.
#[derive(Clone, Debug)]
struct Programs {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    postgres: PathBuf,
}

impl Programs {
    /// Finds `initdb` on `PATH`, else in the newest `/usr/lib/postgresql/*/bin`, and
    /// `pg_ctl` and `postgres` beside it.
    fn find() -> Result<Programs, PostgresStoreError> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .collect();
        versions.sort_unstable_by_key(|(version, _)| std::cmp::Reverse(*version));
        dirs.extend(versions.into_iter().map(|(_, dir)| dir));
        let Some(dir) = dirs.into_iter().find(|dir| dir.join("initdb").is_file()) else {
            return Err(not_installed("initdb"));
        };
        let program = |name: &'static str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(not_installed(name))
            }
        };
        Ok(Programs {
            initdb: program("initdb")?,
            pg_ctl: program("pg_ctl")?,
            postgres: program("postgres")?,
        })
    }
}

fn not_installed(program: &'static str) -> PostgresStoreError {
    PostgresStoreError::NotInstalled {
        program,
        package: PACKAGE,
    }
}

/// Whether the server programs can be found (else [`LocalPostgres::start`] fails with
/// [`PostgresStoreError::NotInstalled`]).
pub fn postgres_installed() -> bool {
    Programs::find().is_ok()
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PostgresStoreError {
    let path = path.to_path_buf();
    move |source| PostgresStoreError::Io {
        operation,
        path,
        source,
    }
}

/// The last [`OUTPUT_TAIL`] bytes of `text`, as text.
fn tail(text: &[u8]) -> String {
    let start = text.len().saturating_sub(OUTPUT_TAIL);
    String::from_utf8_lossy(&text[start..]).trim().to_string()
}

/// `(uid, gid)` of `user` from `/etc/passwd`.
fn passwd_entry(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == user).then_some(())?;
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// The effective uid of this process: the owner of a file it creates.
fn effective_uid(dir: &Path) -> Result<u32, PostgresStoreError> {
    let probe = dir.join(".owner-probe");
    File::create(&probe).map_err(io("cannot create", &probe))?;
    let uid = std::fs::metadata(&probe)
        .map_err(io("cannot inspect", &probe))?
        .uid();
    std::fs::remove_file(&probe).map_err(io("cannot remove", &probe))?;
    Ok(uid)
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16, PostgresStoreError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io("cannot bind a port on", Path::new("127.0.0.1")))?;
    let port = listener
        .local_addr()
        .map_err(io("cannot bind a port on", Path::new("127.0.0.1")))?
        .port();
    Ok(port)
}

impl LocalPostgres {
    /// Creates a cluster in `dir/data` (creating `dir` if needed) and starts its server.
    /// `dir` also holds the server's socket (`.s.PGSQL.PORT`) and log (`log`); keep its
    /// path short (a Unix socket path is limited to 107 bytes).
    ///
    /// Fails with [`PostgresStoreError::NotInstalled`] where the programs are missing.
    pub fn start(dir: &Path) -> Result<LocalPostgres, PostgresStoreError> {
        let programs = Programs::find()?;
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        let run_as = if effective_uid(dir)? == 0 {
            let (uid, gid) = passwd_entry("postgres").ok_or(PostgresStoreError::LocalCluster {
                step: "initdb",
                output: "running as root, and there is no `postgres` user to run the server \
                         as (initdb refuses root)"
                    .into(),
            })?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(io("cannot hand to the postgres user", dir))?;
            Some((uid, gid))
        } else {
            None
        };
        let mut cluster = LocalPostgres {
            server: None,
            programs,
            data: dir.join("data"),
            port: 0,
            run_as,
        };
        cluster.initdb(dir)?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            match cluster.start_server(dir) {
                Ok(()) => return Ok(cluster),
                Err(e @ PostgresStoreError::LocalCluster { .. })
                    if e.to_string().contains("could not bind") =>
                {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(PostgresStoreError::LocalCluster {
            step: "start",
            output: "no free port".into(),
        }))
    }

    /// A command running `program` as the server's user, in `dir`.
    fn command(&self, program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn initdb(&self, dir: &Path) -> Result<(), PostgresStoreError> {
        let output = self
            .command(&self.programs.initdb, dir)
            .arg("-D")
            .arg(&self.data)
            .args([
                "-A",
                "trust",
                "-U",
                USER,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .map_err(io("cannot run", &self.programs.initdb))?;
        if !output.status.success() {
            let mut text = output.stdout;
            text.extend_from_slice(&output.stderr);
            return Err(PostgresStoreError::LocalCluster {
                step: "initdb",
                output: tail(&text),
            });
        }
        Ok(())
    }

    /// Starts the server on a free port and waits until it accepts connections.
    fn start_server(&mut self, dir: &Path) -> Result<(), PostgresStoreError> {
        let port = free_port()?;
        let log_path = dir.join("log");
        let log = File::create(&log_path).map_err(io("cannot create", &log_path))?;
        let log_err = log.try_clone().map_err(io("cannot open", &log_path))?;
        let server = self
            .command(&self.programs.postgres, dir)
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io("cannot run", &self.programs.postgres))?;
        self.server = Some(server);
        self.port = port;
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                let log = std::fs::read(&log_path).unwrap_or_default();
                let reason = e.to_string();
                Err(PostgresStoreError::LocalCluster {
                    step: "start",
                    output: format!("{reason}; server log: {}", tail(&log)),
                })
            }
        }
    }

    /// Waits until `postmaster.pid` says the server is ready, as `pg_ctl -w` does.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = self.data.join("postmaster.pid");
        loop {
            let Some(server) = self.server.as_mut() else {
                return Err("no server".into());
            };
            if let Ok(Some(status)) = server.try_wait() {
                return Err(format!("the server exited ({status})"));
            }
            let pid = server.id().to_string();
            if let Ok(text) = std::fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = text.lines().collect();
                if lines.first() == Some(&pid.as_str())
                    && lines.get(7).is_some_and(|status| status.trim() == "ready")
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// `postgresql://bulk@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id of the server (the postmaster); 0 once stopped.
    pub fn pid(&self) -> u32 {
        self.server.as_ref().map_or(0, Child::id)
    }

    /// Stops the server: `pg_ctl -m fast` (sessions are disconnected, no wait for them),
    /// then a kill if it has not exited within 30 s.
    pub fn stop(mut self) -> Result<(), PostgresStoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), PostgresStoreError> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        let dir = self.data.parent().unwrap_or(Path::new("/")).to_path_buf();
        let output = self
            .command(&self.programs.pg_ctl, &dir)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .output();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(_)) = server.try_wait() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        let _ = server.kill();
        let _ = server.wait();
        let said = output.map_or_else(|e| e.to_string(), |o| tail(&[o.stdout, o.stderr].concat()));
        Err(PostgresStoreError::LocalCluster {
            step: "stop",
            output: format!("killed after {STOP_TIMEOUT:?}; pg_ctl said: {said}"),
        })
    }

    /// Kills a server that failed to start.
    fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_itself_and_its_package() {
        assert_eq!(
            not_installed("initdb").to_string(),
            "initdb is not installed (Debian package postgresql)"
        );
    }

    #[test]
    fn passwd_lookup_finds_root() {
        assert_eq!(passwd_entry("root"), Some((0, 0)));
        assert_eq!(passwd_entry("no-such-user-here"), None);
    }
}
