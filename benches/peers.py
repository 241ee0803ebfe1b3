#!/usr/bin/env python3
"""bulkbench against its peers, the figures of BENCHMARKS.md section 12.

`rejection`: one workload (by default `scenarios/rejection.toml`) driven by bulkbench's
generator against three servers in turn, interleaved (`bulkbench compare`, `--repeat`
times): `bulkbench serve` on the scenario's population (memory backend), the same server
answering by a fixed rule without any lookup (`serve --backend canned:SHARE`, SHARE the
workload's accepted share), and Postfix's `smtp-sink` twice: refusing every RCPT (`-f rcpt
-B "550 5.7.1 ..."`), and accepting every one (its fast path: its refusals cost it about 20
times more); it has no BULK verb, so the generator falls back to MAIL. Each server's
process is measured (`--target-pid`). Replies are not verified (`--verify off`): the
canned server and smtp-sink do not answer as the population says; `bench` runs of the same
scenario verify `serve`'s. `--lockstep` turns pipelining off, `--connections N` changes the
sessions in flight, `--transactions N` the transactions of each (rejection.toml's 50 of
100 RCPTs last 80 s in lock-step over 1,000 connections: `--transactions 1` there). `--pin` puts every server on the first half of the CPUs and the
generator on the other half, so that the generator's work does not take the servers'
CPU (as `bench` pins by default).

`client`: the generator's own CPU against Postfix's `smtp-source`, on the same transactions
against the same server (`serve --backend canned:1.0`, every RCPT accepted): MAIL, 100
recipients, a 200-byte message, one transaction per connection, 10 sessions at once,
`--messages` transactions in all; lock-step (smtp-source does not pipeline), and the
generator pipelined too. `--pin` puts the server on the first half of the CPUs and each
client on the other half, so that neither preempts the other. The generator runs lock-step twice: on one thread, as smtp-source
does (`--generator-threads 1`), and with its default of a thread per CPU. smtp-source's
CPU is its process's (getrusage of the child), the generator's its own over the run's
window (summary.json). The runs are interleaved, `--repeat` rounds; the end gives each
variant's median with its range, and its median share of smtp-source's.

Needs Debian's `postfix` (smtp-sink, smtp-source) and a release build (`cargo build
--release -p bulkbench`). Every wait is bounded; only loopback addresses are used.

    python3 benches/peers.py rejection [--lockstep] [--connections N] [--transactions N]
                                       [--repeat 3] [--pin]
    python3 benches/peers.py client [--messages 2000] [--repeat 3] [--pin]

Exit status: 0 when every run completed, 1 when a step failed.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from idle_connections import Failure, read_listening_line, stop_server
from postfix_compare import free_port, pinned, start_bulkbench

ROOT = Path(__file__).resolve().parent.parent
REFUSAL = "550 5.7.1 Recipient does not accept bulk mail"


def program(name):
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(path).exists():
        raise Failure(f"{name} is not installed: apt-get install postfix")
    return path


def start_sink(port, refuse, cpus=None):
    """smtp-sink on `port`, refusing every RCPT with `REFUSAL` or accepting every one."""
    refusing = ["-f", "rcpt", "-B", REFUSAL] if refuse else []
    sink = subprocess.Popen(
        [program("smtp-sink"), "-u", "nobody", *refusing, f"127.0.0.1:{port}", "4096"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=pinned(cpus),
    )  # fmt: skip
    time.sleep(0.5)
    if sink.poll() is not None:
        raise Failure(f"smtp-sink exited ({sink.returncode})")
    return sink


def variant(scenario, work, args):
    """The scenario as given, or with pipelining off, other sessions in flight and/or
    another number of transactions per session."""
    text = Path(scenario).read_text(encoding="utf-8")
    if args.lockstep:
        text = text.replace("pipelining = true", "pipelining = false")
    keys = {}
    if args.connections:
        keys["concurrency"] = args.connections
    if args.transactions:
        keys["transactions_min"] = keys["transactions_max"] = args.transactions
    if keys:
        lines = [line for line in text.splitlines() if line.split(" = ")[0] not in keys]
        at = lines.index("[workload]") + 1
        lines[at:at] = [f"{key} = {value}" for key, value in keys.items()]
        text = "\n".join(lines) + "\n"
    path = work / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return path


def halves(pin):
    """With `pin`: the first half of this process's CPUs for the servers, the other half
    for the clients; without, no pinning."""
    if not pin:
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        raise Failure("--pin needs at least 2 CPUs")
    half = len(allowed) // 2
    servers, clients = set(allowed[:half]), set(allowed[half:])
    print(f"servers on CPUs {sorted(servers)}, clients on {sorted(clients)}", flush=True)
    return servers, clients


def rejection(args, binary, work):
    server_cpus, client_cpus = halves(args.pin)
    scenario = variant(args.scenario, work, args)
    population = work / "population.tsv"
    subprocess.run([binary, "population", str(scenario), "-o", str(population)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    started = []
    try:
        serve, serve_port = start_bulkbench(
            binary, "serve", ["--population", str(population)], server_cpus
        )
        started.append(serve)
        canned, canned_port = start_bulkbench(
            binary, "serve", ["--backend", f"canned:{args.canned_share}"], server_cpus
        )
        started.append(canned)
        sink_port, accepting_port = free_port(), free_port()
        sink = start_sink(sink_port, refuse=True, cpus=server_cpus)
        started.append(sink)
        accepting = start_sink(accepting_port, refuse=False, cpus=server_cpus)
        started.append(accepting)
        out = ["--out", str(Path(args.out).resolve())] if args.out else []
        compare = [
            binary, "compare", str(scenario), "--verify", "off",
            "--target", f"serve=127.0.0.1:{serve_port}",
            "--target", f"canned=127.0.0.1:{canned_port}",
            "--target", f"smtp-sink=127.0.0.1:{sink_port}",
            "--target", f"smtp-sink-accepting=127.0.0.1:{accepting_port}",
            "--target-pid", f"serve={serve.pid}",
            "--target-pid", f"canned={canned.pid}",
            "--target-pid", f"smtp-sink={sink.pid}",
            "--target-pid", f"smtp-sink-accepting={accepting.pid}",
            "--repeat", str(args.repeat), *out,
        ]  # fmt: skip
        print(" ".join(compare), flush=True)
        return subprocess.run(compare, timeout=3600, preexec_fn=pinned(client_cpus)).returncode
    finally:
        for process in reversed(started):
            stop_server(process, 30)


CLIENT_SCENARIO = """\
name = "client-{mode}"
seed = 5
[population]
mailboxes = 20000
domains = 60
[workload]
mode = "closed"
sessions = {messages}
concurrency = 10
bulk_share = 0.0
recipients_min = 100
recipients_max = 100
recipients_distribution = "fixed"
unknown_share = 0.0
foreign_share = 0.0
pipelining = {pipelining}
message_size_min = 200
message_size_max = 200
warmup_secs = 0.0
"""


def generator_cpu(binary, work, port, messages, pipelining, threads=None, cpus=None):
    mode = "pipelined" if pipelining else "lockstep"
    scenario = work / f"client-{mode}.toml"
    scenario.write_text(
        CLIENT_SCENARIO.format(mode=mode, messages=messages, pipelining=str(pipelining).lower()),
        encoding="utf-8",
    )
    out = work / f"load-{mode}-{time.monotonic_ns()}"
    threading = ["--generator-threads", str(threads)] if threads else []
    subprocess.run(
        [binary, "load", str(scenario), "--target", f"127.0.0.1:{port}", "--verify", "off",
         "--no-pin", "--quiet", "--out", str(out), *threading],
        check=True, capture_output=True, timeout=900, preexec_fn=pinned(cpus),
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rcpts = summary["totals"]["rcpts"]
    return summary["generator"]["cpu_seconds"], rcpts, summary["throughput"]["rcpt_per_sec"]


def source_cpu(port, messages, cpus=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(
        [program("smtp-source"), "-s", "10", "-m", str(messages), "-r", "100", "-l", "200",
         "-f", "news@shop.test", "-t", "ann@example.org", "-M", "bulkbench.test",
         f"127.0.0.1:{port}"],
        check=True, capture_output=True, timeout=900, preexec_fn=pinned(cpus),
    )  # fmt: skip
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rcpts = messages * 100
    return cpu, rcpts, rcpts / wall


def client(args, binary, work):
    server_cpus, client_cpus = halves(args.pin)
    server, port = start_bulkbench(binary, "serve", ["--backend", "canned:1.0"], server_cpus)
    source = "smtp-source, lock-step"
    messages, cpus = args.messages, client_cpus
    variants = (
        (source, lambda: source_cpu(port, messages, cpus)),
        ("generator, lock-step, 1 thread",
         lambda: generator_cpu(binary, work, port, messages, False, threads=1, cpus=cpus)),
        ("generator, lock-step",
         lambda: generator_cpu(binary, work, port, messages, False, cpus=cpus)),
        ("generator, pipelined",
         lambda: generator_cpu(binary, work, port, messages, True, cpus=cpus)),
    )  # fmt: skip
    per_rcpt = {name: [] for name, _ in variants}
    try:
        for repeat in range(args.repeat):
            for name, measure in variants:
                cpu, rcpts, rate = measure()
                per_rcpt[name].append(cpu * 1e6 / rcpts)
                print(f"repeat {repeat + 1}: {name:<32} {cpu * 1e6 / rcpts:6.3f} us CPU/RCPT "
                      f"({cpu:.2f} s, {rcpts} RCPTs, {rate:,.0f} RCPT/s)", flush=True)  # fmt: skip
    finally:
        stop_server(server, 30)
    print(f"\nmedians of {args.repeat} interleaved repeats, us CPU per RCPT [range]; "
          "share of smtp-source's median")  # fmt: skip
    baseline = statistics.median(per_rcpt[source])
    for name, values in per_rcpt.items():
        median = statistics.median(values)
        print(f"  {name:<32} {median:6.3f} [{min(values):.3f}-{max(values):.3f}]  "
              f"x{median / baseline:.2f}")  # fmt: skip
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["rejection", "client"])
    parser.add_argument("--scenario", default=str(ROOT / "scenarios/rejection.toml"))
    parser.add_argument("--canned-share", type=float, default=0.279,
                        help="the canned server's accepted share (rejection.toml's: 0.279)")  # fmt: skip
    parser.add_argument("--lockstep", action="store_true")
    parser.add_argument("--connections", type=int)
    parser.add_argument("--transactions", type=int)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--pin", action="store_true",
                        help="the servers on the first half of the CPUs, each client on the "
                             "other half")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, choices=range(1, 101), metavar="N")
    parser.add_argument("--out", help="rejection: the comparison's folder")
    parser.add_argument("--bin", default=str(ROOT / "target/release/bulkbench"))
    args = parser.parse_args()
    binary = str(Path(args.bin).resolve())
    try:
        with tempfile.TemporaryDirectory(prefix="bulkbench-peers-") as tmp:
            run = rejection if args.mode == "rejection" else client
            sys.exit(run(args, binary, Path(tmp)))
    except (Failure, subprocess.CalledProcessError) as failure:
        print(f"peers: {failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
