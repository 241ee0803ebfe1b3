#!/usr/bin/env python3
"""Slowloris against a running `bulkbench serve`: are slow clients closed, and is a
legitimate client served while they are connected?

Starts the server on 127.0.0.1 (port chosen by the kernel) with `--max-connections M` and
any extra flags given after `--`, then opens N "slow" connections from loopback source
addresses (127.0.0.1 for all of them with `--sources 1`, or 127.0.0.1, 127.0.0.2, ...
round-robin over K addresses), each bound before it connects. Every admitted slow client
drips one byte per `--interval` seconds: the bytes of a command line that never ends
(`--phase command`), or, after EHLO, MAIL, RCPT and DATA sent at full speed, message
content that never ends (`--phase data`). Once all of them are dripping, a legitimate
client from 127.0.0.250 runs one whole session (EHLO, MAIL, RCPT, DATA, a message, QUIT).
The script then waits, at most `--window` seconds, for the server to close every slow
client, and prints when it did and what it said.

Python 3 standard library only; builds nothing (run `cargo build --release -p bulkbench`
first). Every wait is bounded and the only address ever connected to is the server's
loopback one.

    python3 benches/slow_clients.py [BINARY] [-n 200] [--sources 200] [--phase command]
                                    [--max-connections 200] [--window 90] [-- SERVE_FLAGS...]

Exit status: 0 when the measurement ran (whatever it found) and the server exited 0 on
SIGTERM; 1 when a step failed; 2 for bad arguments.
"""

import argparse
import errno
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from idle_connections import Failure, raise_fd_limit, read_listening_line, stop_server

ROOT = Path(__file__).resolve().parent.parent
LEGIT_SOURCE = "127.0.0.250"
# A command line far longer than any drip window fills (it is never completed), and the
# start of a message's content (never ended).
COMMAND_DRIP = b"NOOP " + b"x" * 100_000
DATA_PREFIX = b"EHLO slow.example\r\nMAIL FROM:<slow@shop.example>\r\nRCPT TO:<ann@example.org>\r\n"
DATA_DRIP = b"Subject: slow\r\n\r\n" + b"y" * 100_000


class Slow:
    """One slow client: its socket, what it has read, and how it ended."""

    def __init__(self, index, source, sock):
        self.index = index
        self.source = source
        self.sock = sock
        self.received = b""
        self.state = "connecting"  # greeting, preamble, dripping, refused, closed
        self.sent = 0
        self.closed_at = None

    def last_line(self):
        lines = [line for line in self.received.split(b"\r\n") if line]
        return lines[-1].decode("ascii", "replace") if lines else ""


def source_address(index, sources):
    return f"127.0.0.{1 + index % sources}"


def open_slow(address, count, sources):
    clients = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        source = source_address(index, sources)
        sock.bind((source, 0))
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise Failure(f"connect from {source} failed: {errno.errorcode.get(code, code)}")
        clients.append(Slow(index, source, sock))
    return clients


def pump(clients, selector, phase, timeout):
    """Reads whatever the server sent, for up to `timeout` s; advances each client."""
    for key, _ in selector.select(timeout):
        client = key.data
        try:
            chunk = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            chunk = b""
        if not chunk:
            selector.unregister(client.sock)
            # Our side too, as a client would: the server lingers on a closed connection
            # until the client closes (at most 2 s), and holds its slot meanwhile.
            client.sock.close()
            client.closed_at = time.monotonic()
            if client.state in ("greeting",) or client.received.startswith(b"421"):
                client.state = "refused"
            else:
                client.state = "closed"
            continue
        client.received += chunk
        if client.state == "greeting" and b"\r\n" in client.received:
            if client.received.startswith(b"220"):
                if phase == "data":
                    client.sock.send(DATA_PREFIX + b"DATA\r\n")
                    client.state = "preamble"
                else:
                    client.state = "dripping"
            else:
                client.state = "refused"
        elif client.state == "preamble" and b"\r\n354" in client.received:
            client.state = "dripping"


def drip(clients, phase):
    payload = DATA_DRIP if phase == "data" else COMMAND_DRIP
    for client in clients:
        if client.state == "dripping" and client.sent < len(payload):
            try:
                client.sock.send(payload[client.sent:client.sent + 1])
                client.sent += 1
            except OSError:
                pass


def legitimate_session(address, timeout_s):
    """One whole session from LEGIT_SOURCE; returns (served, what happened)."""
    sock = socket.create_connection(address, timeout=timeout_s,
                                    source_address=(LEGIT_SOURCE, 0))
    sock.settimeout(timeout_s)
    buffer = b""

    def reply():
        nonlocal buffer
        while True:
            # A reply's last line is `NNN text`; earlier lines are `NNN-text`.
            lines = buffer.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if len(line) >= 4 and line[3:4] == b" ":
                    buffer = b"\r\n".join(lines[i + 1:])
                    return line.decode("ascii", "replace")
            chunk = sock.recv(4096)
            if not chunk:
                return "(closed)"
            buffer += chunk

    try:
        greeting = reply()
        if not greeting.startswith("220"):
            return False, f"greeting {greeting!r}"
        steps = [b"EHLO legit.example", b"MAIL FROM:<legit@shop.example>",
                 b"RCPT TO:<ann@example.org>", b"DATA",
                 b"Subject: legit\r\n\r\nhello\r\n.", b"QUIT"]
        codes = []
        for step in steps:
            sock.sendall(step + b"\r\n")
            codes.append(reply()[:3])
        ok = codes == ["250", "250", "250", "354", "250", "221"]
        return ok, " ".join(codes)
    except OSError as error:
        return False, f"failed: {error}"
    finally:
        sock.close()


def run(args):
    raise_fd_limit(args.connections + 64)
    log = tempfile.TemporaryFile(mode="w+b")
    command = [str(args.binary), "serve", "--listen", "127.0.0.1:0",
               "--population", str(args.population),
               "--max-connections", str(args.max_connections), *args.serve_flags]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=log)
    clients = []
    try:
        address = read_listening_line(server, 60)
        print(f"server: {' '.join(command[1:])}")
        print(f"slow clients: {args.connections} from {args.sources} source address(es), "
              f"phase {args.phase}, one byte every {args.interval} s")
        selector = selectors.DefaultSelector()
        started = time.monotonic()
        clients = open_slow(address, args.connections, args.sources)
        for client in clients:
            client.state = "greeting"
            selector.register(client.sock, selectors.EVENT_READ, client)
        # Until every client is either refused or dripping (the preamble of DATA answered).
        deadline = started + 30
        while any(c.state in ("greeting", "preamble") for c in clients):
            if time.monotonic() > deadline:
                raise Failure("slow clients not all greeted or refused within 30 s")
            pump(clients, selector, args.phase, 0.1)
        refused = [c for c in clients if c.state == "refused"]
        admitted = [c for c in clients if c.state != "refused"]
        refusals = sorted({c.last_line()[:9] for c in refused})
        print(f"admitted {len(admitted)}, refused {len(refused)} {refusals} "
              f"(in {time.monotonic() - started:.1f} s)")

        # Drip for a few intervals so the slow clients really are slow, then the legitimate
        # client, while they are still connected.
        next_drip = time.monotonic()
        for _ in range(3):
            drip(clients, args.phase)
            next_drip += args.interval
            while time.monotonic() < next_drip:
                pump(clients, selector, args.phase, max(0.0, next_drip - time.monotonic()))
        still = sum(1 for c in admitted if c.state == "dripping")
        served, what = legitimate_session(address, 10)
        print(f"legitimate client from {LEGIT_SOURCE} while {still} slow clients are "
              f"connected: served {'yes' if served else 'no'} ({what})")

        window_end = started + args.window
        while any(c.state == "dripping" for c in admitted) and time.monotonic() < window_end:
            if time.monotonic() >= next_drip:
                drip(clients, args.phase)
                next_drip += args.interval
            pump(clients, selector, args.phase,
                 max(0.0, min(next_drip, window_end) - time.monotonic()))
        closed = [c for c in admitted if c.state == "closed"]
        open_left = len(admitted) - len(closed)
        if closed:
            times = sorted(c.closed_at - started for c in closed)
            last_lines = sorted({c.last_line()[:60] for c in closed})
            print(f"closed by the server: {len(closed)} of {len(admitted)}, first at "
                  f"{times[0]:.1f} s, last at {times[-1]:.1f} s after they connected; "
                  f"last reply {last_lines}")
        if open_left:
            print(f"still open after the {args.window:.0f} s window: {open_left} of "
                  f"{len(admitted)} (bytes dripped each: about "
                  f"{max(c.sent for c in admitted)})")
        if open_left == 0 and not served:
            # Their slots come free as the server's tasks end; try for up to 10 s.
            retry_end = time.monotonic() + 10
            while True:
                served_after, what = legitimate_session(address, 10)
                if served_after or time.monotonic() > retry_end:
                    break
                time.sleep(0.1)
            print(f"legitimate client once they are closed: served "
                  f"{'yes' if served_after else 'no'}, "
                  f"{time.monotonic() - started:.1f} s after the slow clients connected "
                  f"({what})")
    finally:
        for client in clients:
            client.sock.close()
        time.sleep(0.5)
        status = stop_server(server, 30)
    print(f"server exit status after SIGTERM: {status}")
    if status != 0:
        log.seek(0)
        tail = log.read()[-2000:].decode("utf-8", "replace")
        raise Failure(f"server exited {status}; its log ends with:\n{tail}")


def main():
    parser = argparse.ArgumentParser(
        description="Slow clients against the server (loopback only).",
        epilog="Arguments after `--` are passed to `serve`.")
    parser.add_argument("binary", nargs="?", type=Path,
                        default=ROOT / "target/release/bulkbench",
                        help="release bulkbench binary [%(default)s]")
    parser.add_argument("--population", type=Path,
                        default=ROOT / "scenarios/example-population.tsv")
    parser.add_argument("-n", "--connections", type=int, default=200,
                        help="slow clients [%(default)s]")
    parser.add_argument("--sources", type=int, default=200,
                        help="loopback source addresses they connect from, 1 to 249 "
                             "[%(default)s]")
    parser.add_argument("--phase", choices=("command", "data"), default="command",
                        help="drip a command line or message content [%(default)s]")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between two bytes of a slow client [%(default)s]")
    parser.add_argument("--max-connections", type=int, default=200,
                        help="the server's --max-connections [%(default)s]")
    parser.add_argument("--window", type=float, default=90.0,
                        help="seconds to wait for the server to close them [%(default)s]")

    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(extra) - bool(extra or "--" in argv)])
    args.serve_flags = extra
    if not 1 <= args.sources <= 249:
        parser.error("--sources must be between 1 and 249")
    if args.connections < 1 or args.interval <= 0:
        parser.error("--connections and --interval must be positive")
    try:
        run(args)
    except Failure as failure:
        print(f"slow_clients: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
