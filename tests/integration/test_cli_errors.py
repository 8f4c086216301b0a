"""Start-up problems are one clear line on stderr, never a traceback."""
import os
import subprocess
import sys

import pytest

from tests.engine import free_port


def msgroute(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "workers", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", [["run"], ["gateway"], ["worker", "route"], ["worker", "dispatch"],
                                     ["worker", "status"], ["demo"]])
def test_unreachable_broker_is_one_line_with_the_masked_url(command, tmp_path):
    port = free_port()
    result = msgroute(*command, env={"MSGROUTE_AMQP_URL": f"amqp://guest:s3cret@127.0.0.1:{port}/",
                                     "MSGROUTE_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"amqp://guest:***@127.0.0.1:{port}/" in lines[0]
    assert "s3cret" not in result.stderr
    assert "rabbitmq-server" in lines[0]


def test_unreachable_postgresql_is_one_line(tmp_path):
    port = free_port()
    result = msgroute("migrate", env={"MSGROUTE_DATABASE_URL": f"postgresql://app:pw@127.0.0.1:{port}/x"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"postgresql://app:***@127.0.0.1:{port}/x" in lines[0]


def test_config_errors_name_file_key_and_expectation(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[gateway]\nport = "eighty"\ncolour = 1\n\n[[carriers]]\nname = "x"\nchannel = "sms"\n'
                      'adapter = "carrier-pigeon"\nregion = "r"\n')
    result = msgroute("--config", str(config), "gateway")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert any(f"{config}: gateway.port:" in line for line in lines), lines
    assert any(f"{config}: gateway.colour: unknown key" in line for line in lines), lines
    assert any("carriers[0].adapter: unknown adapter 'carrier-pigeon'" in line for line in lines), lines


def test_missing_config_file_is_one_line(tmp_path):
    result = msgroute("--config", str(tmp_path / "nope.toml"), "run")
    assert result.returncode == 2
    assert result.stderr.strip() == f"msgroute: {tmp_path / 'nope.toml'}: no such configuration file"
