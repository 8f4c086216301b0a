"""A throwaway RabbitMQ node of our own, for tests that stop, restart or starve the broker.

The shared node on 5672 is never touched: this one has its own node name, AMQP and
distribution ports, data and log directories, configuration, empty plugin list and Erlang
cookie (its HOME is a temporary directory), and it is stopped by its own name or by the
process group this helper started.

    with ThrowawayBroker() as broker:
        broker.url            # amqp://guest:guest@127.0.0.1:<port>/
        broker.stop()         # the whole node, gracefully
        broker.start()        # again, same data: durable queues and messages survive
        broker.ctl("set_vm_memory_high_watermark", "0.0001")
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.engine import free_port

LIB_BIN = Path("/usr/lib/rabbitmq/bin")  # Debian: the real scripts, without the su-to-rabbitmq wrapper


def _tool(name: str) -> str:
    direct = LIB_BIN / name
    if direct.exists():
        return str(direct)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install RabbitMQ (Debian: apt-get install rabbitmq-server)")
    return found


def available() -> bool:
    try:
        _tool("rabbitmq-server")
        _tool("rabbitmqctl")
    except RuntimeError:
        return False
    return True


class ThrowawayBroker:
    def __init__(self, base: Path | None = None, start_timeout: float = 90.0):
        suffix = uuid.uuid4().hex[:8]
        self.nodename = f"msgroute-test-{suffix}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        self._own_base = base is None
        self.base = Path(base or tempfile.mkdtemp(prefix=f"msgroute-broker-{suffix}-"))
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self._prepare()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _prepare(self) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = warning\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            "HOME": str(self.base / "home"),  # its own Erlang cookie, shared with our rabbitmqctl
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        for inherited in ("RABBITMQ_MNESIA_DIR", "RABBITMQ_PLUGINS_EXPAND_DIR", "RABBITMQ_FEATURE_FLAGS_FILE",
                          "RABBITMQ_QUORUM_DIR", "RABBITMQ_STREAM_DIR", "RABBITMQ_LOGS"):
            self.env.pop(inherited, None)

    # --- control -------------------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([_tool("rabbitmqctl"), "-n", self.nodename, *args], env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.nodename}: {result.stderr or result.stdout}")
        return result

    def start(self) -> None:
        if self.running:
            return
        log = open(self.base / "log" / "server.out", "ab")
        self.process = subprocess.Popen([_tool("rabbitmq-server")], env=self.env, cwd=self.base / "home",
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        self._await_startup()

    def _await_startup(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"throwaway RabbitMQ exited with {self.process.returncode}: {self.output()}")
            if self._accepts_amqp():
                result = self.ctl("await_startup", "--timeout", "30", check=False, timeout=40)
                if result.returncode == 0:
                    return
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"throwaway RabbitMQ did not start in {self.start_timeout:.0f}s: {self.output()}")

    def _accepts_amqp(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                sock.settimeout(2)
                return sock.recv(8).startswith(b"\x01")  # connection.start frame
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60) -> None:
        """Stop the whole node gracefully (connections are closed); kill it if it does not stop."""
        if not self.running:
            return
        self.ctl("stop", timeout=timeout, check=False)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the node's process group: a crash, as far as clients can tell."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def output(self) -> str:
        parts = []
        for path in [self.base / "log" / "server.out", *sorted((self.base / "log").glob("*.log"))]:
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)[-4000:]

    def close(self) -> None:
        try:
            self.stop(timeout=30)
        finally:
            self.kill()
            if self._own_base:
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> ThrowawayBroker:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()
