"""docker-compose.yml, config/prometheus.yml and config/grafana-dashboard.json: well-formed, and
they only use metric names and settings the engine really has."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from workers import metrics

ROOT = Path(__file__).resolve().parents[1]
ENV_VARS = {"MSGROUTE_AMQP_URL", "MSGROUTE_DATABASE_URL", "MSGROUTE_HTTP_HOST", "MSGROUTE_HTTP_PORT",
            "MSGROUTE_PUBLIC_URL", "MSGROUTE_ADMIN_TOKEN", "MSGROUTE_CONFIG", "MSGROUTE_HASH_KEY"}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is required (Debian: apt-get install --no-install-recommends prometheus)"
    return path


def defined_metrics() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        describe = getattr(value, "describe", None)
        if callable(describe) and hasattr(value, "_name"):
            for family in describe():
                names.add(family.name)
    return names


def test_compose_has_the_stack_and_configures_msgroute_by_environment():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["rabbitmq"]["image"] == "rabbitmq:3.10-management"
    assert services["postgres"]["image"] == "postgres:15"
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    msgroute = services["msgroute"]
    assert msgroute["build"] == "." and msgroute["command"][:2] == ["msgroute", "run"]
    env = msgroute["environment"]
    assert set(env) <= ENV_VARS and {"MSGROUTE_AMQP_URL", "MSGROUTE_DATABASE_URL"} <= set(env)
    assert env["MSGROUTE_DATABASE_URL"].startswith("postgresql://")
    assert "@rabbitmq:5672/" in env["MSGROUTE_AMQP_URL"] and "@postgres:5432/" in env["MSGROUTE_DATABASE_URL"]
    assert not msgroute.get("volumes"), "configuration comes from the environment, not mounted files"
    assert services["migrate"]["command"] == ["msgroute", "migrate"]
    assert msgroute["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    mounted = [v.split(":")[0] for v in services["prometheus"]["volumes"]]
    assert "./config/prometheus.yml" in mounted
    for volume in services["grafana"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume


def test_prometheus_config_is_valid_and_scrapes_the_gateway():
    config = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "msgroute")
    assert job["metrics_path"] == "/metrics" and job["dns_sd_configs"][0]["port"] == 8080
    result = subprocess.run([promtool(), "check", "config", str(ROOT / "config" / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            out.append((panel["title"], target["expr"]))
    return out


def test_dashboard_uses_only_real_metrics_and_covers_the_essentials():
    exprs = dashboard_exprs()
    defined = defined_metrics()
    used = set()
    for title, expr in exprs:
        for name in re.findall(r"\bmsgroute_\w+", expr):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert base in defined, f"panel {title!r} uses {name}, which workers/metrics.py does not define"
            used.add(base)
    for essential in ("msgroute_messages_accepted", "msgroute_dispatch_seconds", "msgroute_dispatch",
                      "msgroute_failovers", "msgroute_carrier_circuit_open", "msgroute_queue_depth",
                      "msgroute_receipts"):
        assert essential in used, f"the dashboard has no panel on {essential}"
    text = " ".join(e for _, e in exprs)
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.95," in text


def test_dashboard_queries_are_valid_promql(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, expr) in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
