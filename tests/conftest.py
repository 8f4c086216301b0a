import os
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.engine import DEFAULT_ROUTING, SANDBOX_CARRIERS, Engine, PgDatabase, Vhost, free_port, write_config

# Property tests check results, not speed: on a shared CI machine a first call that loads
# phonenumbers' metadata took 260 ms and failed hypothesis's default 200 ms deadline.
hypothesis_settings.register_profile("msgroute", deadline=None)
hypothesis_settings.load_profile("msgroute")


@pytest.fixture
def vhost():
    with Vhost() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'msgroute.db'}"
    else:
        with PgDatabase() as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'msgroute.db'}"


@pytest.fixture
def make_engine(tmp_path, vhost):
    """make_engine(store_url, config_body=..., processes=1, start=True) -> a running Engine."""
    engines: list[Engine] = []

    def _make(store_url: str, config_body: str = SANDBOX_CARRIERS + DEFAULT_ROUTING, processes: int = 1,
              start: bool = True, env: dict | None = None) -> Engine:
        workdir = tmp_path / f"engine{len(engines)}"
        workdir.mkdir()
        config = workdir / "msgroute.toml"
        write_config(config, config_body)
        port = free_port()
        full_env = {**os.environ, "MSGROUTE_AMQP_URL": vhost, "MSGROUTE_DATABASE_URL": store_url,
                    "MSGROUTE_HTTP_PORT": str(port), "MSGROUTE_PUBLIC_URL": f"http://127.0.0.1:{port}",
                    "MSGROUTE_ADMIN_TOKEN": "test-admin-token", "PYTHONPATH": str(Path(__file__).parents[1]),
                    **(env or {})}
        engine = Engine(workdir=workdir, config_path=config, env=full_env, port=port, processes=processes)
        engines.append(engine)
        if start:
            engine.cli("migrate")
            engine.start()
        return engine

    yield _make
    for engine in engines:
        engine.stop()
