#!/usr/bin/env python3
"""`bulkbench serve` against Postfix with the access table and Postfix with `bulkbench
policyd`, on one workload, every reply verified.

Writes the scenario's population (a TSV file for `serve` and `policyd`, and the Postfix
access table, built with `postmap lmdb:`), then starts, each on a free loopback port:

- `bulkbench serve --preferences-apply-to all` on the population;
- `bulkbench policyd --bulk every` on the same population (memory backend);
- a private Postfix instance (its own configuration folder, queue and data folder in a
  temporary folder) with two smtpd listeners: one refusing RCPTs through
  `check_recipient_access lmdb:TABLE`, one through `check_policy_service` to the policyd.

and runs `bulkbench compare SCENARIO --target serve=... --target postfix-access=...
--target postfix-policyd=...`, naming each target's processes (`--target-pid`) so that its
server CPU per RCPT is measured: serve's process; the Postfix master (its smtpd processes
are below it); the master and the policyd. The arms run interleaved, `--repeat` times.
Everything is stopped at the end, also after a failure or Ctrl-C.

Postfix is tuned for a rejection benchmark, as a site receiving bulk mail would be, in
main.cf (see BENCHMARKS.md, "Postfix"):

- `smtpd_error_sleep_time = 0`, `smtpd_soft_error_limit` and `smtpd_hard_error_limit`
  raised: each refused RCPT counts as an error, and by default smtpd sleeps after the
  10th and drops the session after the 20th: a 100-RCPT transaction with 70 refusals
  would be cut off, and sleeping would measure the sleep.
- `smtpd_client_connection_count_limit`, `smtpd_client_connection_rate_limit`,
  `smtpd_client_recipient_rate_limit` (anvil) off, and no client exempted by default
  (`smtpd_client_event_limit_exceptions` covers loopback only through `mynetworks`).
- `smtpd_junk_command_limit` raised: RSET between transactions is a junk command.
- `smtpd_peername_lookup = no`: no DNS on loopback.
- `in_flow_delay = 0`: a transaction that accepts a recipient opens a queue file, and
  smtpd waits up to 1 s for a flow-control token first; the queue manager hands tokens
  back as it moves messages on, and a workload that ends its transactions with RSET sends
  none, so every transaction would wait the whole second.

Needs root (Postfix's daemons run as `postfix`), Debian's `postfix` and `postfix-lmdb`,
and a release build (`cargo build --release -p bulkbench`). Every wait is bounded; only
loopback addresses are used.

    python3 benches/postfix_compare.py [SCENARIO] [--repeat 3] [--out DIR] [--bin PATH]

Exit status: that of `bulkbench compare` (0: every reply verified), 1 when a step failed.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from idle_connections import Failure, read_listening_line, stop_server

ROOT = Path(__file__).resolve().parent.parent

# The main.cf of the private instance (its log on standard output, into a file).
MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = /dev/stdout
myhostname = mx.bulkbench.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains = {domains}
relay_recipient_maps =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = reject_unauth_destination
smtputf8_enable = no
biff = no
# As the README's access-table recipe: subaddresses fall back to their mailbox, and relay
# and table domains match themselves only.
recipient_delimiter = +
parent_domain_matches_subdomains = debug_peer_list, fast_flush_domains, mynetworks,
    permit_mx_backup_networks, qmqpd_authorized_clients
# A rejection benchmark: refused RCPTs are errors; no sleep, no cut-off.
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000000
smtpd_hard_error_limit = 1000000
smtpd_junk_command_limit = 1000000
# anvil: no per-client limits.
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_event_limit_exceptions =
smtpd_peername_lookup = no
# No flow control: smtpd takes a token per queue file it opens (at a transaction's first
# accepted RCPT) and the queue manager returns one per message it moves on; transactions
# that end in RSET send none, so the tokens run out and every later transaction waits
# in_flow_delay (1 s) first.
in_flow_delay = 0
# Enough smtpd processes for every session in flight.
default_process_limit = {processes}
bulkbench_access = reject_unauth_destination, check_recipient_access lmdb:{table}
bulkbench_policyd = reject_unauth_destination, check_policy_service inet:127.0.0.1:{policyd}
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postfix_program(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def run_checked(command, what):
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise Failure(f"{what} failed ({done.returncode}):\n{done.stderr}")
    return done


def scenario_domains(population):
    """The population's served domains: its `@domain<TAB>regime` rows."""
    with open(population, encoding="utf-8") as rows:
        return [row.split("\t", 1)[0][1:] for row in rows if row.startswith("@")]


def wait_for_greeting(port, postfix, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if postfix.poll() is not None:
            raise Failure(f"postfix exited ({postfix.returncode}) before serving port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                if sock.recv(512).startswith(b"220 "):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise Failure(f"postfix did not greet on port {port} within {timeout_s} s")


def configure_postfix(work, domains, table, policyd_port, processes):
    """A private Postfix's folders and configuration, with two smtpd listeners; (its
    configuration folder, the access listener's port, the policyd listener's port)."""
    config, queue, data = work / "etc", work / "queue", work / "data"
    for folder in (config, queue, data):
        folder.mkdir()
    os.chmod(work, 0o755)
    shutil.chown(data, "postfix")
    main_cf = MAIN_CF.format(
        queue=queue,
        data=data,
        domains=" ".join(domains),
        table=table,
        policyd=policyd_port,
        processes=processes,
    )
    access_port, policyd_smtp_port = free_port(), free_port()
    master = []
    with open("/etc/postfix/master.cf", encoding="utf-8") as stock:
        for line in stock:
            fields = line.split()
            if fields[:2] == ["smtp", "inet"]:
                continue
            # Nothing chrooted: the temporary queue holds no copies of /etc.
            if not line.startswith(("#", " ", "\t")) and len(fields) >= 8:
                fields[4] = "n"
                line = " ".join(fields) + "\n"
            master.append(line)
    for port, restrictions in ((access_port, "access"), (policyd_smtp_port, "policyd")):
        master.append(
            f"127.0.0.1:{port} inet n - n - - smtpd\n"
            f"  -o smtpd_recipient_restrictions=$bulkbench_{restrictions}\n"
        )
    (config / "main.cf").write_text(main_cf, encoding="utf-8")
    (config / "master.cf").write_text("".join(master), encoding="utf-8")
    return config, access_port, policyd_smtp_port


def start_postfix(work, config):
    """`postfix start-fg` on `config`, as a child."""
    return subprocess.Popen(
        [postfix_program("postfix"), "-c", str(config), "start-fg"],
        stdin=subprocess.DEVNULL,
        stdout=open(work / "postfix.log", "wb"),
        stderr=subprocess.STDOUT,
    )


def stop_postfix(postfix, config):
    subprocess.run(
        [postfix_program("postfix"), "-c", str(config), "stop"],
        capture_output=True,
        timeout=60,
    )
    try:
        postfix.wait(30)
    except subprocess.TimeoutExpired:
        postfix.kill()
        postfix.wait(5)


def pinned(cpus):
    """A `preexec_fn` that pins the child to `cpus` (None: no pinning, no function)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def start_bulkbench(binary, command, args, cpus=None):
    """`bulkbench COMMAND` on a free loopback port, pinned to `cpus` if given."""
    process = subprocess.Popen(
        [binary, command, "--listen", "127.0.0.1:0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=pinned(cpus),
    )
    host, port = read_listening_line(process, 300)
    return process, port


def run(args):
    binary = str(Path(args.bin).resolve())
    scenario = str(Path(args.scenario).resolve())
    for program in ("postfix", "postmap"):
        if not Path(postfix_program(program)).exists():
            raise Failure(f"{program} is not installed: apt-get install postfix postfix-lmdb")
    if not Path("/usr/lib/postfix/postfix-lmdb.so").exists():
        raise Failure("Postfix's lmdb tables are not installed: apt-get install postfix-lmdb")
    started = []
    postfix = None
    with tempfile.TemporaryDirectory(prefix="bulkbench-postfix-") as tmp:
        work = Path(tmp)
        try:
            population = work / "population.tsv"
            table = work / "access"
            print("writing the population and the access table ...", flush=True)
            run_checked([binary, "population", scenario, "-o", str(population)], "population")
            run_checked(
                [binary, "population", scenario, "--format", "postfix-access", "-o", str(table)],
                "population --format postfix-access",
            )
            domains = scenario_domains(population)
            serve, serve_port = start_bulkbench(
                binary, "serve", ["--population", str(population), "--preferences-apply-to", "all"]
            )
            started.append(serve)
            policyd, policyd_port = start_bulkbench(
                binary, "policyd", ["--backend", f"memory:{population}", "--bulk", "every"]
            )
            started.append(policyd)
            config, access_port, policyd_smtp_port = configure_postfix(
                work, domains, table, policyd_port, args.processes
            )
            run_checked(
                [postfix_program("postmap"), "-c", str(config), f"lmdb:{table}"], "postmap"
            )
            print("starting Postfix ...", flush=True)
            postfix = start_postfix(work, config)
            wait_for_greeting(access_port, postfix)
            wait_for_greeting(policyd_smtp_port, postfix)
            out = ["--out", str(Path(args.out).resolve())] if args.out else []
            compare = [
                binary, "compare", scenario,
                "--target", f"serve=127.0.0.1:{serve_port}",
                "--target", f"postfix-access=127.0.0.1:{access_port}",
                "--target", f"postfix-policyd=127.0.0.1:{policyd_smtp_port}",
                "--target-pid", f"serve={serve.pid}",
                "--target-pid", f"postfix-access={postfix.pid}",
                "--target-pid", f"postfix-policyd={postfix.pid},{policyd.pid}",
                "--repeat", str(args.repeat),
                *out,
            ]  # fmt: skip
            print(" ".join(compare), flush=True)
            return subprocess.run(compare, timeout=3600).returncode
        finally:
            if postfix is not None:
                stop_postfix(postfix, config)
                log = work / "postfix.log"
                if args.keep_log and log.exists():
                    shutil.copy(log, args.keep_log)
            for process in reversed(started):
                stop_server(process, 30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", default=str(ROOT / "scenarios/postfix.toml"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="the comparison's folder (default: a dated one in reports/)")
    parser.add_argument("--bin", default=str(ROOT / "target/release/bulkbench"))
    parser.add_argument(
        "--processes", type=int, default=200, help="Postfix's default_process_limit"
    )
    parser.add_argument("--keep-log", help="copy Postfix's log here at the end")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        sys.exit(run(args))
    except Failure as failure:
        print(f"postfix_compare: {failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
