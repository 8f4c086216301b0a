"""`msgroute run`: the gateway and every worker kind as child processes of one parent.

Children are started with the same command line as their standalone commands (so `ps`
shows `msgroute gateway`, `msgroute worker dispatch`, ...). A child that dies is restarted
(with a growing pause if it keeps dying). SIGTERM or Ctrl-C: every child is asked to drain
and stop (SIGTERM), then the parent exits 0.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from workers import metrics

log = logging.getLogger("msgroute.supervisor")
DRAIN_SECONDS = 30.0


def base_command(config: str | None, log_format: str) -> list[str]:
    script = sys.argv[0] if Path(sys.argv[0]).name == "msgroute" else shutil.which("msgroute")
    command = [script] if script else [sys.executable, "-m", "workers"]
    if config:
        command += ["--config", str(Path(config).resolve())]
    return command + ["--log-format", log_format]


def child_commands(processes: int) -> list[list[str]]:
    kinds = [["gateway"]]
    for kind in ("route", "dispatch", "status"):
        kinds += [["worker", kind]] * processes
    return kinds


@dataclass
class Child:
    args: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    env: dict = field(default_factory=dict)

    def start(self, base: list[str]) -> None:
        self.process = subprocess.Popen(base + self.args, env=self.env)
        self.started_at = time.monotonic()
        log.info("started child", extra={"child": " ".join(self.args), "pid": self.process.pid})


class Supervisor:
    def __init__(self, config: str | None, processes: int = 1, log_format: str = "json"):
        self.base = base_command(config, log_format)
        self.processes = processes
        self.children: list[Child] = []
        self.stopping = False
        self.metrics_dir: str | None = None

    def _prepare_metrics_dir(self) -> dict:
        """A fresh multiprocess directory, so /metrics covers exactly this run's processes."""
        self.metrics_dir = tempfile.mkdtemp(prefix="msgroute-metrics-")
        env = dict(os.environ)
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        return env

    def start(self) -> None:
        env = self._prepare_metrics_dir()
        self.children = [Child(args, env=env) for args in child_commands(self.processes)]
        for child in self.children:
            child.start(self.base)

    def request_stop(self, *_args) -> None:
        self.stopping = True

    def watch_once(self) -> None:
        now = time.monotonic()
        for child in self.children:
            proc = child.process
            if proc is not None and proc.poll() is not None:
                metrics.mark_process_dead(proc.pid)
                ran = now - child.started_at
                child.restarts = 0 if ran > 60 else child.restarts + 1
                child.next_start = now + min(30.0, 0.5 * (2 ** min(child.restarts, 6)))
                log.warning("child exited; restarting", extra={"child": " ".join(child.args),
                                                               "code": proc.returncode, "after": ran})
                child.process = None
            if child.process is None and now >= child.next_start:
                child.start(self.base)

    def stop(self) -> None:
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_SECONDS
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child did not drain in time; killing", extra={"child": " ".join(child.args)})
                child.process.kill()
                child.process.wait()
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def run_forever(self, until=None) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        try:
            while not self.stopping and not (until and until()):
                self.watch_once()
                time.sleep(0.2)
        finally:
            self.stop()
        return 0
