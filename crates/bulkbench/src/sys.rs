//! What the CLI reads from the operating system: process CPU time and peak memory from
//! /proc, and the open-files limit.

use std::time::Duration;

use bulk_report::summary::CpuTimes;

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User + system CPU time of process `pid` (`None`: this process), from /proc.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count fields
    // from after its closing parenthesis. utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / clock_ticks()))
}

/// CPU time (user + system) of the processes `roots` and every process below them, ended
/// ones included: a process's own time and the time of the children it has reaped
/// (cutime, cstime), plus the same of its live descendants. For a store that forks a
/// process per connection (a PostgreSQL postmaster and its backends), whose children come
/// and go within a run. `None` when no root can be read.
pub fn tree_cpu_time(roots: &[u32]) -> Option<Duration> {
    let ticks: f64 = process_tree(roots)?.iter().map(|(_, ticks)| ticks).sum();
    Some(Duration::from_secs_f64(ticks / clock_ticks()))
}

/// The sum of the peak resident set sizes (VmHWM) of the processes `roots` and every live
/// process below them, in bytes: for a server of several processes, an upper bound of
/// what they held at once. `None` when no root can be read.
pub fn tree_peak_rss_bytes(roots: &[u32]) -> Option<u64> {
    let tree = process_tree(roots)?;
    Some(
        tree.iter()
            .filter_map(|(pid, _)| peak_rss_bytes(*pid))
            .sum(),
    )
}

/// The processes `roots` and every live process below them, each with its own and its
/// reaped children's CPU ticks (utime + stime + cutime + cstime); `None` when no root is
/// alive.
fn process_tree(roots: &[u32]) -> Option<Vec<(u32, f64)>> {
    // (pid, parent, own + reaped children's ticks) of every process now.
    let processes: Vec<(u32, u32, f64)> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (parent, ticks) = stat_ticks(&stat)?;
            Some((pid, parent, ticks))
        })
        .collect();
    let mut inside: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|root| processes.iter().any(|(pid, ..)| pid == root))
        .collect();
    if inside.is_empty() {
        return None;
    }
    // Descendants, level by level (bounded: a process is added at most once).
    let mut next = 0;
    while next < inside.len() {
        let parent = inside[next];
        for (pid, ppid, _) in &processes {
            if *ppid == parent && !inside.contains(pid) {
                inside.push(*pid);
            }
        }
        next += 1;
    }
    Some(
        processes
            .iter()
            .filter(|(pid, ..)| inside.contains(pid))
            .map(|(pid, _, ticks)| (*pid, *ticks))
            .collect(),
    )
}

/// The parent pid and utime + stime + cutime + cstime of one /proc/PID/stat line.
fn stat_ticks(stat: &str) -> Option<(u32, f64)> {
    // Fields after the command name (field 2, in parentheses, may hold spaces): state is
    // field 3, ppid 4, utime 14, stime 15, cutime 16, cstime 17.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let parent = fields.get(1)?.parse().ok()?;
    let mut ticks = 0.0;
    for i in 11..=14 {
        ticks += fields.get(i)?.parse::<f64>().ok()?;
    }
    Some((parent, ticks))
}

/// For each of `sets`, the time its CPUs have spent since boot, by kind, summed, from one
/// reading of /proc/stat, with the monotonic clock as the span; `None` when it cannot be
/// read or lacks one of the CPUs.
pub fn cpu_set_times<const N: usize>(sets: [&[usize]; N]) -> Option<[CpuTimes; N]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the struct we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    let wall = now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9;
    let ticks = clock_ticks();
    let mut times = [CpuTimes::default(); N];
    for (set, times) in sets.iter().zip(&mut times) {
        *times = parse_cpu_set_times(&stat, set, ticks, wall)?;
    }
    Some(times)
}

fn parse_cpu_set_times(stat: &str, cpus: &[usize], ticks: f64, wall: f64) -> Option<CpuTimes> {
    let mut total = CpuTimes {
        span: wall * cpus.len() as f64,
        ..CpuTimes::default()
    };
    for &cpu in cpus {
        let name = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
        // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
        // already in user.
        let fields: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields[..] else {
            return None;
        };
        total.user += (user + nice) / ticks;
        total.system += system / ticks;
        total.idle += (idle + iowait) / ticks;
        total.irq += irq / ticks;
        total.softirq += softirq / ticks;
        total.steal += steal / ticks;
    }
    Some(total)
}

/// Peak resident set size (VmHWM) of process `pid`, in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The host's listen-queue counters now (`/proc/net/netstat`): `None` off Linux or when the
/// file does not have them.
pub fn listen_queue() -> Option<ListenQueue> {
    parse_listen_queue(&std::fs::read_to_string("/proc/net/netstat").ok()?)
}

/// `TcpExt`'s `ListenOverflows` and `ListenDrops` from the text of `/proc/net/netstat`: a
/// line of names, then a line of values, both headed `TcpExt:`.
fn parse_listen_queue(netstat: &str) -> Option<ListenQueue> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let value = |name: &str| -> Option<u64> {
        let at = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(at)?.parse().ok()
    };
    Some(ListenQueue {
        overflows: value("ListenOverflows")?,
        drops: value("ListenDrops")?,
    })
}

pub use bulk_report::summary::ListenQueue;

pub use bulk_server::raise_open_files_limit;

/// Makes `command`'s process start pinned to `cpus` (set between fork and exec), so every
/// thread it starts runs there and sizes itself to them.
pub fn pin_child(command: &mut std::process::Command, cpus: bulk_loadgen::CpuSet) {
    use std::os::unix::process::CommandExt as _;

    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: `pin_current_thread` makes one system call on a
    // set built before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || cpus.pin_current_thread());
    }
}

/// Makes `command`'s process belong to this one, not to the terminal:
///
/// - its own process group, so the Ctrl-C a terminal sends to its foreground group reaches
///   only bulkbench, which then stops its run and the child in order (otherwise the child
///   would start shutting down in the middle of the measurement, and could be gone before
///   its peak memory is read);
/// - a SIGTERM when this process dies (Linux `PR_SET_PDEATHSIG`), so a bulkbench killed
///   outright leaves no server behind. The signal follows the *thread* that spawned the
///   child: spawn from a thread that lives as long as the child (bulkbench spawns from its
///   main thread).
pub fn tie_child_to_this_process(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;

    command.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid is async-signal-safe and called before the fork.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the child between fork and exec and makes only
        // async-signal-safe system calls (prctl, getppid); it allocates nothing, not even
        // for its error.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died between the fork and the prctl: the signal will not come.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listen_queue_counters() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\n\
                       TcpExt: 0 17 21 5\n\
                       IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(
            parse_listen_queue(netstat),
            Some(ListenQueue {
                overflows: 17,
                drops: 21
            })
        );
        assert_eq!(parse_listen_queue("TcpExt: ListenDrops\nTcpExt: 3\n"), None);
        assert_eq!(parse_listen_queue(""), None);
        if std::path::Path::new("/proc/net/netstat").exists() {
            assert!(listen_queue().is_some(), "this kernel's /proc/net/netstat");
        }
    }

    #[test]
    fn reads_this_process() {
        // Burn a little CPU so the figure cannot be zero by accident of tick rounding.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_time(None).unwrap() > Duration::ZERO);
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 1024 * 1024);
        assert!(raise_open_files_limit() >= 1024);
        // Since boot CPU 0 has been idle for less than the clock has run (a unit error,
        // ticks for seconds, would make idle 100 times too large).
        let [cpu0] = cpu_set_times([&[0]]).unwrap();
        assert!(cpu0.idle < cpu0.span, "{cpu0:?}");
        assert!(cpu0.user + cpu0.system > 0.0, "{cpu0:?}");
    }

    const STAT: &str = "cpu  500 20 300 9000 10 0 70 5 0 0
cpu0 100 0 200 4000 10 0 50 3 0 0
cpu1 400 20 100 5000 0 1 20 2 0 0
cpu10 7 7 7 7 7 7 7 7 7 7
intr 123 0 0
";

    #[test]
    fn sums_the_named_cpus_only() {
        let cpu1 = parse_cpu_set_times(STAT, &[1], 100.0, 60.0).unwrap();
        assert_eq!(cpu1.span, 60.0);
        assert_eq!(cpu1.user, 4.2);
        assert_eq!(cpu1.system, 1.0);
        assert_eq!(cpu1.idle, 50.0);
        assert_eq!(cpu1.irq, 0.01);
        assert_eq!(cpu1.softirq, 0.2);
        assert_eq!(cpu1.steal, 0.02);
        let both = parse_cpu_set_times(STAT, &[0, 1], 100.0, 60.0).unwrap();
        assert_eq!(both.span, 120.0);
        assert_eq!(both.system, 3.0);
        assert_eq!(both.idle, 90.1);
        // `cpu1` is not `cpu10`, and a CPU /proc/stat does not list is an error.
        let cpu10 = parse_cpu_set_times(STAT, &[10], 1.0, 60.0).unwrap();
        assert_eq!(cpu10.softirq, 7.0);
        assert!(parse_cpu_set_times(STAT, &[2], 100.0, 60.0).is_none());
        assert!(parse_cpu_set_times("cpu0 1 2 x 4 5 6 7 8\n", &[0], 100.0, 1.0).is_none());
        assert!(parse_cpu_set_times("cpu0 1 2 3 4 5 6 7\n", &[0], 100.0, 1.0).is_none());
    }

    #[test]
    fn a_tree_counts_live_children_and_the_ones_it_reaped() {
        // A shell that burns CPU in a child it waits for, then in a child that stays.
        let mut shell = std::process::Command::new("sh")
            .args([
                "-c",
                "sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'; \
                 sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30' & \
                 sleep 30",
            ])
            .spawn()
            .unwrap();
        let root = shell.id();
        // Wait (bounded) until the second child has burned its share too.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut tree = Duration::ZERO;
        while std::time::Instant::now() < deadline {
            tree = tree_cpu_time(&[root]).unwrap();
            let own = cpu_time(Some(root)).unwrap();
            // The reaped child counts (cutime): more than the shell's own time alone,
            // and with the live child's, more again.
            if tree > own + Duration::from_millis(20) && children_busy(root) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = shell.kill();
        let _ = shell.wait();
        assert!(tree > Duration::from_millis(20), "{tree:?}");
        assert_eq!(tree_cpu_time(&[u32::MAX]), None);
        // This process and the shell children below it: at least this process's own peak.
        let own = peak_rss_bytes(std::process::id()).unwrap();
        assert!(tree_peak_rss_bytes(&[std::process::id()]).unwrap() >= own);
        assert_eq!(tree_peak_rss_bytes(&[u32::MAX]), None);
        assert_eq!(
            stat_ticks("1 (a b) S 7 1 1 0 -1 0 0 0 0 0 3 4 5 6 20"),
            Some((7, 18.0))
        );
    }

    /// A live child of `pid` has used CPU.
    fn children_busy(pid: u32) -> bool {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .any(|entry| {
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                    return false;
                };
                stat_ticks(&stat).is_some_and(|(parent, ticks)| parent == pid && ticks > 0.0)
            })
    }
}
