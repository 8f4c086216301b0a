"""`msgroute senders add|list|remove --account ID`: the pool /v1/senders manages, from the shell."""
import os
import subprocess
import sys

import aiohttp
import orjson
import pytest


def msgroute(store_url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "msgroute.toml"
    if not config.exists():
        config.write_text('[gateway]\nhost = "127.0.0.1"\n')
    return subprocess.run([sys.executable, "-m", "workers", "--config", str(config), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "MSGROUTE_DATABASE_URL": store_url})


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """A refusal: non-zero exit, one line on stderr that says what is wrong, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("msgroute: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    return lines[0]


def test_add_list_remove_and_every_refusal(store_url, tmp_path):
    cli = lambda *args: msgroute(store_url, tmp_path, *args)  # noqa: E731
    ok(cli("migrate"))
    account = orjson.loads(ok(cli("accounts", "create", "acme")))["id"]
    other = orjson.loads(ok(cli("accounts", "create", "other")))["id"]

    long_code = orjson.loads(ok(cli("senders", "add", "+44 7400 000001", "--account", account, "--country", "gb",
                                    "--rate-limit", "1", "--format", "json")))
    assert {k: long_code[k] for k in ("channel", "address", "country", "rate_limit")} == {
        "channel": "sms", "address": "+447400000001", "country": "GB", "rate_limit": 1.0}
    assert long_code["id"].startswith("snd_")
    brand = ok(cli("senders", "add", "ACME", "--account", account))  # alphanumeric id, table output
    assert "address=ACME" in brand and "channel=sms" in brand
    mail = orjson.loads(ok(cli("senders", "add", "news@example.com", "--account", account, "--format", "json")))
    assert mail["channel"] == "email"  # inferred from the '@'

    listed = orjson.loads(ok(cli("senders", "list", "--account", account, "--format", "json")))
    assert [s["address"] for s in listed] == ["+447400000001", "ACME", "news@example.com"]
    assert [s["address"] for s in orjson.loads(ok(cli("senders", "list", "--account", account, "--channel",
                                                      "email", "--format", "json")))] == ["news@example.com"]
    table = ok(cli("senders", "list", "--account", account)).splitlines()
    assert len(table) == 3 and "address=+447400000001" in table[0] and "rate_limit=1.0" in table[0]
    assert orjson.loads(ok(cli("senders", "list", "--account", other, "--format", "json"))) == []

    refused(cli("senders", "add", "+447400000002", "--account", "acc_nope"), "no account 'acc_nope'")
    refused(cli("senders", "list", "--account", "acc_nope"), "no account 'acc_nope'")
    refused(cli("senders", "remove", "ACME", "--account", "acc_nope"), "no account 'acc_nope'")
    refused(cli("senders", "add", "+4474", "--account", account), "invalid sender '+4474'", "phone number")
    refused(cli("senders", "add", "Brand Name", "--account", account), "invalid sender 'Brand Name'")
    refused(cli("senders", "add", "x@", "--account", account, "--channel", "email"), "invalid sender 'x@'")
    refused(cli("senders", "add", "+447400000002", "--account", account, "--country", "GBR"),
            "--country 'GBR'", "alpha-2")
    for rate in ("fast", "0", "-1", "nan"):
        refused(cli("senders", "add", "+447400000002", "--account", account, f"--rate-limit={rate}"),
                f"--rate-limit '{rate}'", "positive number")
    line = refused(cli("senders", "add", "+447400000001", "--account", account), "already in the sms pool")
    assert long_code["id"] in line
    # the same number in another account's pool is that account's business
    ok(cli("senders", "add", "+447400000001", "--account", other))

    # remove by address (as typed) or by id; only from this account's pool
    assert long_code["id"] in ok(cli("senders", "remove", "+44 7400 000001", "--account", account))
    refused(cli("senders", "remove", "+447400000001", "--account", account), "no sender '+447400000001'")
    refused(cli("senders", "remove", mail["id"], "--account", other), f"no sender '{mail['id']}'")
    assert mail["id"] in ok(cli("senders", "remove", mail["id"], "--account", account))
    assert [s["address"] for s in orjson.loads(ok(cli("senders", "list", "--account", account, "--format",
                                                      "json")))] == ["ACME"]
    assert [s["address"] for s in orjson.loads(ok(cli("senders", "list", "--account", other, "--format",
                                                      "json")))] == ["+447400000001"]
    empty = cli("senders", "list", "--account", account, "--channel", "email")
    assert empty.returncode == 0 and empty.stdout == "" and "no senders" in empty.stderr


async def test_cli_and_api_manage_the_same_pool(make_engine, sqlite_url):
    engine = make_engine(sqlite_url)
    account = engine.create_account("acme")
    auth = {"Authorization": f"Bearer {account['api_key']}"}
    added = orjson.loads(engine.cli("senders", "add", "+447400000009", "--account", account["id"], "--country",
                                    "GB", "--format", "json").stdout)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{engine.base_url}/v1/senders", headers=auth) as resp:
            assert [s["id"] for s in (await resp.json())["data"]] == [added["id"]]
        # a request without `from` goes out from the pool sender the CLI added
        async with http.post(f"{engine.base_url}/v1/messages", headers=auth, json={
                "channel": "sms", "to": "+447911123456", "body": "hi"}) as resp:
            assert resp.status == 202, await resp.text()
            message_id = (await resp.json())["id"]
        async with http.get(f"{engine.base_url}/v1/messages/{message_id}", headers=auth) as resp:
            assert (await resp.json())["from"] == "+447400000009"
        async with http.post(f"{engine.base_url}/v1/senders", headers=auth, json={
                "channel": "email", "address": "news@example.com"}) as resp:
            by_api = await resp.json()
    listed = orjson.loads(engine.cli("senders", "list", "--account", account["id"], "--format", "json").stdout)
    assert [s["id"] for s in listed] == [added["id"], by_api["id"]]
    engine.cli("senders", "remove", by_api["id"], "--account", account["id"])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{engine.base_url}/v1/senders", headers=auth) as resp:
            assert [s["id"] for s in (await resp.json())["data"]] == [added["id"]]


@pytest.mark.parametrize("args", [["senders"], ["senders", "add", "+447400000001"], ["senders", "list"]])
def test_missing_arguments_are_usage_errors(args, sqlite_url, tmp_path):
    result = msgroute(sqlite_url, tmp_path, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "required" in result.stderr
