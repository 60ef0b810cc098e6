"""Where the microseconds go: py-spy profiles of a draining worker and of its scoring process.

    python -m tools.profile_stream [--items 40000 | --rate N] [--seconds 12] [--top 25] [--broker tansu|kafka]

Starts a broker of its own (as `tools.bench` does), publishes ``--items`` of the benchmark's records, starts
one worker and, once it is draining, records both of its processes with py-spy for ``--seconds``
(``py-spy record -f raw --nonblocking``; ``pip install -e '.[bench]'``). With ``--rate N`` nothing is
published up front: once the worker is ready, items are offered at N a second as in `tools.bench`'s
latency phase (a producer lingering 5 ms), and the profile is of a worker keeping up, not draining.
Prints, per process, the share of its samples in each function — inclusive (the function and what it calls)
and on its own — with the process's CPU µs per item over the same span, so that the shares read as
microseconds.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from streams.settings import Settings
from streams.topics import RAW, ensure_topics
from tools.bench import (
    OFFER_LINGER_MS,
    Latency,
    children,
    cpu_seconds,
    http_json,
    latency_records,
    make_records,
    measure_latency,
    percentile,
    publish,
    stop_run,
    worker_env,
)
from tools.broker import FLAVORS, bench_broker, free_port
from tools.common import ensure_model, run_sync

ROOT = Path(__file__).resolve().parent.parent
WARM_UP_SECONDS = 3  # with --rate: offered before the profile starts


# Frames every sample of a process passes through (the interpreter's, asyncio's, the CLI's): left out of
# the inclusive list, which would otherwise open with them.
ROOTS = re.compile(
    r"^(<module>|main|_main|_run_code|_run_module_as_main|spawn_main|cmd_worker|Handle\._run"
    r"|BaseEventLoop\.(run_forever|run_until_complete|_run_once)|Thread\._bootstrap(_inner)?|Thread\.run"
    r"|BaseProcess\.(_bootstrap|run)|_process_worker|Worker\.execute_from_commandline) \("
)


def frame_name(frame: str) -> str:
    """``function (path/file.py:12)`` → ``function (file.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':', 1)[0]})" if where else name


def summarise(raw: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """(samples, inclusive samples per function, own samples per function) of a py-spy raw file."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [frame_name(frame) for frame in stack.split(";")]
        for name in set(frames):
            inclusive[name] += samples
        own[frames[-1]] += samples
    return total, inclusive, own


def report(title: str, raw: Path, us_per_item: float, top: int) -> list[str]:
    total, inclusive, own = summarise(raw)
    lines = [f"== {title}: {total:,} samples, {us_per_item:.0f} µs CPU per item"]
    for heading, counts in (("inclusive", inclusive), ("own", own)):
        lines.append(f"-- {heading}")
        ranked = [(name, n) for name, n in counts.most_common() if heading == "own" or not ROOTS.match(name)]
        for name, samples in ranked[:top]:
            share = samples / max(total, 1)
            lines.append(f"{share * 100:5.1f}%  {share * us_per_item:6.0f} µs  {name}")
    return lines


def offer_at(rate: int, seconds: int, bootstrap: str) -> list[Latency]:
    """`tools.bench`'s latency phase, long enough to cover the warm-up and the profile."""
    span = seconds + WARM_UP_SECONDS + 1
    records = latency_records("same", rate * span, 0)
    return run_sync(measure_latency(bootstrap, rate, span, records, OFFER_LINGER_MS))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--broker", choices=FLAVORS, default="tansu")
    parser.add_argument("--rate", type=int, help="offer N items/s to a caught-up worker instead of a backlog")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        parser.error("py-spy is not installed: pip install -e '.[bench]'")

    tmp = Path(tempfile.mkdtemp(prefix="nomenclature-profile-"))
    settings = Settings.from_env(data_dir=tmp / "worker")
    broker, bootstrap, flavor = bench_broker(args.broker, settings)
    worker: subprocess.Popen[bytes] | None = None
    try:
        ensure_model(settings)
        run_sync(ensure_topics(bootstrap, settings.partitions, 1))
        if not args.rate:
            run_sync(publish(bootstrap, RAW, make_records(args.items)))
        port = free_port()
        log = (tmp / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "worker"],
            cwd=ROOT,
            env=worker_env(settings, bootstrap, flavor, port, "profile"),
            stdout=log,
            stderr=log,
        )
        offering: list[Latency] = []
        offer = threading.Thread(target=lambda: offering.extend(offer_at(args.rate, args.seconds, bootstrap)))
        done = 0
        while done < (1 if args.rate else min(2_000, args.items // 10)):
            time.sleep(0.5)
            if worker.poll() is not None:
                tail = (tmp / "worker.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"worker exited:\n{tail}")
            try:
                if args.rate and offer.ident is None and http_json(port, "/health").get("assignment"):
                    offer.start()
                done = http_json(port, "/stats")["topics"].get(RAW, {}).get("in", 0)
            except OSError:
                done = 0
        if args.rate:
            time.sleep(WARM_UP_SECONDS)
            done = http_json(port, "/stats")["topics"].get(RAW, {}).get("in", 0)
        # the worker's busiest child is its scoring process (the others are multiprocessing's helpers)
        scoring = max(children(worker.pid), key=lambda pid: cpu_seconds([pid]))
        processes = {"worker": worker.pid, "scoring process": scoring}
        cpu_before = {name: cpu_seconds([pid]) for name, pid in processes.items()}
        record = [spy, "record", "-r", "100", "-d", str(args.seconds), "-f", "raw", "--nonblocking"]
        spies = {
            name: subprocess.Popen(
                [*record, "-o", str(tmp / f"{pid}.raw"), "-p", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in processes.items()
        }
        for process in spies.values():
            process.wait()
        drained = http_json(port, "/stats")["topics"].get(RAW, {}).get("in", 0) - done
        if args.rate:
            offer.join()
            if not offering:
                raise SystemExit("the offering producer failed (its error is above)")
            totals = [one.total for one in offering]
            print(
                f"broker: {flavor}; {drained:,} items offered at {args.rate:,}/s taken in while profiled "
                f"({args.seconds}s); latency under the profilers p50 {percentile(totals, 0.5):.0f} ms, "
                f"p99 {percentile(totals, 0.99):.0f} ms"
            )
        elif drained <= 0 or done >= args.items:
            raise SystemExit("the worker was not draining while profiled: raise --items")
        else:
            print(f"broker: {flavor}; {drained:,} items drained while profiled ({args.seconds}s)")
        for name, pid in processes.items():
            us = (cpu_seconds([pid]) - cpu_before[name]) / drained * 1e6
            print("\n".join(report(f"{name} (pid {pid})", tmp / f"{pid}.raw", us, args.top)))
    finally:
        stop_run(worker, broker, tmp)


if __name__ == "__main__":
    main()
