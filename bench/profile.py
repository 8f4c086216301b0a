"""Where the engine's CPU goes under end-to-end load: py-spy on every engine process.

Starts an isolated engine, warms it up, offers `--messages` through HTTP batches (or
AMQP), and while they flow records each process (gateway, route, dispatch, status) with
`py-spy record --format raw` (on-CPU samples only). Prints, per process, the packages (or
engine files) the samples were spent for, the lines that burn the most samples themselves
("own"), and the engine lines whose calls take the most ("incl."), as shares of that
process's samples. Raw files stay in --out for
flamegraph tools. Needs py-spy (`pip install py-spy`) and the right to ptrace (root).

    python bench/profile.py [--messages 8000] [--seconds 20] [--mode batch|amqp] [--out DIR]
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import uvloop

from e2e import SENDERS, WARMUP
from harness import ROOT, BenchEngine, StoreProgress, table

OWN_CODE = ("router/", "workers/", "carriers/")
STDLIB = ("asyncio/", "concurrent/", "threading.py", "logging/", "json/", "selectors.py", "socket.py", "ssl.py",
          "functools.py", "enum.py", "re/", "ipaddress.py", "base64.py", "hmac.py", "uuid.py", "datetime.py",
          "random.py", "typing.py", "dataclasses.py", "contextlib.py", "abc.py", "weakref.py", "_weakrefset.py",
          "queue.py", "decimal.py", "<string>", "email/", "urllib/", "http/")


def record(pids: dict[int, str], seconds: float, out: Path) -> tuple[dict[str, Path], list]:
    files, procs = {}, []
    for pid, name in pids.items():
        files[name] = out / f"{name.replace(' ', '-')}.txt"
        procs.append(subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                       "--rate", "200", "--format", "raw", "--full-filenames", "--nonblocking",
                                       "--output", str(files[name])],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return files, procs


def short(frame: str) -> str:
    """`func (/abs/path/site-packages/pkg/mod.py:12)` -> `pkg/mod.py:12 func`."""
    name, _, where = frame.rpartition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{where} {name}"


def library(frames: list[str]) -> str:
    """Who a sample's CPU is for: the innermost frame outside the standard library, by package
    (engine code by file); standard-library time counts for whoever called it."""
    for frame in reversed(frames):
        where = frame.split(" ", 1)[0]
        if where.startswith(OWN_CODE):
            return where.split(":")[0]
        if not where.startswith(STDLIB):
            return where.split("/")[0].split(".py")[0]
    leaf = frames[-1]
    return "event loop (uvloop)" if "runners.py" in leaf else "store thread" if "concurrent/" in leaf else leaf


def summarise(path: Path, top: int) -> tuple[int, list, list, list]:
    own, inclusive, libraries, total = Counter(), Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [short(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        libraries[library(frames)] += n
        for frame in set(frames):
            if frame.startswith(OWN_CODE):
                inclusive[frame] += n
    return total, own.most_common(top), inclusive.most_common(top), libraries.most_common(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--mode", choices=("batch", "amqp", "single"), default="batch")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="msgroute-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    engine = BenchEngine(out / "engine")
    progress = StoreProgress(engine.db_path)
    try:
        engine.start()
        send = SENDERS[args.mode]
        uvloop.run(send(engine, 0, WARMUP))
        progress.wait_complete(WARMUP, timeout=120)
        pids = {pid: name for pid, name in engine.child_pids().items() if name != "run"}
        files, spies = record(pids, args.seconds, out)
        uvloop.run(send(engine, WARMUP, args.messages))
        for spy in spies:
            spy.wait()
        print(f"statuses after {args.seconds:.0f}s of samples: {progress.statuses()}")
    finally:
        progress.close()
        engine.close()
    for name, path in files.items():
        total, own, inclusive, libraries = summarise(path, args.top)
        print(f"\n== {name}: {total} on-CPU samples ({path})")
        print(table(["for: package or engine file", "share"], [[f, f"{100 * n / total:.1f} %"] for f, n in libraries]))
        print(table(["own: line", "share"], [[f, f"{100 * n / total:.1f} %"] for f, n in own]))
        print(table(["incl.: engine line", "share"], [[f, f"{100 * n / total:.1f} %"] for f, n in inclusive]))


if __name__ == "__main__":
    main()
