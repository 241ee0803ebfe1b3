#!/usr/bin/env python3
"""Memory cost of idle SMTP connections on a running `bulkbench serve`.

Starts the server on 127.0.0.1 (port chosen by the kernel), reads its resident set size,
opens N TCP connections to it over loopback (from 127.0.0.1 to 127.0.0.16 in turn, so the
per-address limit, a tenth of the connection limit, does not refuse them) and reads each
one's 220 greeting, waits a
moment, reads the resident set size again, prints a small table, then closes everything,
stops the server with SIGTERM and checks that it exits 0.

Python 3 standard library only; builds nothing (run `cargo build --release -p bulkbench`
first). Every wait is bounded and the only address ever connected to is the server's
loopback one.

    python3 benches/idle_connections.py [BINARY [POPULATION]] [-n 10000]

Exit status: 0 when every connection was greeted, the server exited 0 and the growth stayed
within --max-delta-mib; 1 otherwise (a failure says why on stderr); 2 for bad
arguments.
"""

import argparse
import errno
import ipaddress
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


class Failure(Exception):
    """The measurement could not be completed."""


def status_kib(pid, field):
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Failure(f"/proc/{pid}/status has no {field}")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_listening_line(server, timeout_s):
    """Reads the server's `listening on IP:PORT` line from its stdout, within timeout_s."""
    deadline = time.monotonic() + timeout_s
    fd = server.stdout.fileno()
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"no `listening on` line within {timeout_s:.0f} s")
            if not selector.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise Failure(f"server exited before listening (status {server.wait(5)})")
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    prefix = "listening on "
    if not line.startswith(prefix):
        raise Failure(f"unexpected first line from the server: {line!r}")
    host, _, port = line[len(prefix):].rpartition(":")
    address = ipaddress.ip_address(host.strip("[]"))
    if not address.is_loopback:
        raise Failure(f"server listens on {address}, not on loopback; refusing to connect")
    return str(address), int(port)


def connect_batch(address, count, timeout_s):
    """Opens `count` connections and reads each greeting; returns the open sockets.

    To an IPv4 loopback server they come from 127.0.0.1 to 127.0.0.16 in turn, as the load
    generator's do: the server lets one address hold only a tenth of its connections."""
    deadline = time.monotonic() + timeout_s
    pending = {}
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    spread = family == socket.AF_INET and ipaddress.ip_address(address[0]).is_loopback
    with selectors.DefaultSelector() as selector:
        try:
            for i in range(count):
                sock = socket.socket(family, socket.SOCK_STREAM)
                if spread:
                    sock.bind((f"127.0.0.{1 + i % 16}", 0))
                sock.setblocking(False)
                code = sock.connect_ex(address)
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise Failure(f"connect failed: {os.strerror(code)}")
                pending[sock] = b""
                selector.register(sock, selectors.EVENT_READ)
            done = []
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(
                        f"{len(pending)} of {count} connections got no greeting "
                        f"within {timeout_s:.0f} s"
                    )
                for key, _ in selector.select(left):
                    sock = key.fileobj
                    try:
                        chunk = sock.recv(512)
                    except OSError as error:
                        raise Failure(f"connection failed: {error}") from None
                    if not chunk:
                        raise Failure("server closed a connection before greeting it")
                    pending[sock] += chunk
                    if b"\r\n" in pending[sock]:
                        greeting = pending.pop(sock)
                        selector.unregister(sock)
                        done.append(sock)
                        if not greeting.startswith(b"220 "):
                            raise Failure(f"greeting was not 220: {greeting[:80]!r}")
            return done
        except BaseException:
            for sock in pending:
                sock.close()
            raise


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise Failure(
            f"the open-files hard limit is {hard}; {wanted} descriptors are needed "
            f"(use fewer connections)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def check_port_range(count):
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return
    if high - low + 1 < count:
        raise Failure(f"the ephemeral port range {low}-{high} is smaller than {count}")


def fmt_mib(kib):
    return f"{kib / 1024:.1f} MiB"


def stop_server(server, timeout_s):
    """SIGTERM, then wait; SIGKILL if it does not exit in time. Returns the exit status."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(5)
        raise Failure(f"server did not exit within {timeout_s:.0f} s of SIGTERM; killed")


def run(args):
    for path, what in ((args.binary, "binary"), (args.population, "population file")):
        if not path.is_file():
            raise Failure(f"{what} {path} not found")
    raise_fd_limit(args.connections + 64)
    check_port_range(args.connections)

    log = tempfile.TemporaryFile(mode="w+b")
    command = [
        str(args.binary), "serve",
        "--listen", "127.0.0.1:0",
        "--population", str(args.population),
        "--max-connections", str(args.max_connections),
    ]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=log)
    sockets = []
    try:
        address = read_listening_line(server, args.start_timeout)
        time.sleep(args.settle)
        rss_before = status_kib(server.pid, "VmRSS")
        fds_before = open_fds(server.pid)

        started = time.monotonic()
        while len(sockets) < args.connections:
            if time.monotonic() - started > args.connect_timeout:
                raise Failure(
                    f"only {len(sockets)} connections after {args.connect_timeout:.0f} s"
                )
            count = min(args.batch, args.connections - len(sockets))
            sockets += connect_batch(address, count, args.batch_timeout)
        connect_s = time.monotonic() - started

        time.sleep(args.settle)
        if server.poll() is not None:
            raise Failure(f"server exited while connections were open ({server.returncode})")
        rss_after = status_kib(server.pid, "VmRSS")
        hwm = status_kib(server.pid, "VmHWM")
        fds_after = open_fds(server.pid)
        held = fds_after - fds_before
        if held < args.connections:
            raise Failure(f"server holds {held} more descriptors, expected {args.connections}")

        delta = rss_after - rss_before
        per_connection = delta * 1024 / args.connections
        print(f"server {args.binary} on {address[0]}:{address[1]}, "
              f"population {args.population.name}")
        print(f"{args.connections} connections opened and greeted in {connect_s:.1f} s "
              f"(batches of {args.batch}); server descriptors {fds_before} -> {fds_after}")
        print()
        header = ("connections", "RSS before", "RSS after", "delta", "bytes/connection")
        row = (str(args.connections), fmt_mib(rss_before), fmt_mib(rss_after),
               fmt_mib(delta), f"{per_connection:.0f}")
        widths = [max(len(h), len(v)) for h, v in zip(header, row)]
        for cells in (header, row):
            print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
        print()
        print(f"peak RSS (VmHWM) {fmt_mib(hwm)}")
        within = delta <= args.max_delta_mib * 1024
        print(f"budget: delta <= {args.max_delta_mib} MiB: {'ok' if within else 'EXCEEDED'}")
    finally:
        for sock in sockets:
            sock.close()
        sockets.clear()
        # Let the server see every EOF before it is asked to stop.
        time.sleep(min(args.settle, 1.0))
        status = stop_server(server, args.stop_timeout)

    print(f"server exit status after SIGTERM: {status}")
    if status != 0:
        log.seek(0)
        tail = log.read()[-2000:].decode("utf-8", "replace")
        raise Failure(f"server exited {status}; its log ends with:\n{tail}")
    return within


def main():
    parser = argparse.ArgumentParser(
        description="Measure the server's memory per idle connection (loopback only).")
    parser.add_argument("binary", nargs="?", type=Path,
                        default=ROOT / "target/release/bulkbench",
                        help="release bulkbench binary [%(default)s]")
    parser.add_argument("population", nargs="?", type=Path,
                        default=ROOT / "scenarios/example-population.tsv",
                        help="population file [%(default)s]")
    parser.add_argument("-n", "--connections", type=int, default=10_000,
                        help="idle connections to open [%(default)s]")
    parser.add_argument("--batch", type=int, default=500,
                        help="connections opened before waiting for their greetings")
    parser.add_argument("--max-connections", type=int, default=20_000,
                        help="the server's --max-connections [%(default)s]")
    parser.add_argument("--max-delta-mib", type=float, default=100.0,
                        help="budget for the RSS growth [%(default)s MiB]")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to wait before each RSS reading [%(default)s]")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="seconds for the server to start listening [%(default)s]")
    parser.add_argument("--batch-timeout", type=float, default=20.0,
                        help="seconds for one batch to be greeted [%(default)s]")
    parser.add_argument("--connect-timeout", type=float, default=120.0,
                        help="seconds for all connections [%(default)s]")
    parser.add_argument("--stop-timeout", type=float, default=30.0,
                        help="seconds for the server to exit after SIGTERM [%(default)s]")
    args = parser.parse_args()
    if not 1 <= args.connections <= args.max_connections:
        parser.error("--connections must be between 1 and --max-connections")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    try:
        ok = run(args)
    except Failure as failure:
        print(f"idle_connections: {failure}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
