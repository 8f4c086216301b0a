"""API fuzzing against a real gateway (one engine for the module).

1. Schemathesis, driven by the gateway's own /openapi.json, with real credentials for both
   security schemes (an account's API key and the admin token): at least 200 examples per
   operation through the coverage and fuzzing phases, then the stateful phase (it follows
   the links between operations). Every check it has is on — no 5xx; status codes, content
   types, headers and bodies conform to the document; schema-invalid input is refused; auth
   is enforced — except `positive_data_acceptance` (schema-valid is not the same as valid: a
   random string is a schema-valid `to`) and `object_level_authorization` (it needs two
   accounts' credentials set up; account isolation has its own integration test).
2. Hand-written malformed input that schema-driven generation does not reach: deep JSON
   nesting, invalid UTF-8, lone surrogates, CR/LF in email headers, oversize bodies, wrong
   content types, odd methods, non-Latin-1 header bytes. Every answer is a 4xx (in SPEC §4's
   error shape when it comes from the application), never 500.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.engine import Engine, Vhost, free_port
from tests.faults import tools

pytestmark = [pytest.mark.slow]

EXAMPLES = int(os.environ.get("MSGROUTE_FUZZ_EXAMPLES", "200"))
ADMIN_TOKEN = "fuzz-admin-token"
SCHEMATHESIS_TIMEOUT = 900

CARRIERS = """
[[regions]]
name = "eu-west"
jurisdictions = ["EU"]

[[carriers]]
name = "sms-uk"
channel = "sms"
adapter = "sandbox"
region = "uk-south"
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { default = "0.0300", currency = "USD" }

# never chosen (dearer than sms-uk): here for its receipt and inbound webhooks
[[carriers]]
name = "twilio-uk"
channel = "sms"
adapter = "twilio"
region = "uk-south"
priority = 9
settings = { base_url = "http://127.0.0.1:9", account_sid = "AC123", auth_token = "token", from = "+447400000001" }
rates = { default = "0.9000", currency = "USD" }

[[carriers]]
name = "mail"
channel = "email"
adapter = "sandbox"
region = "eu-west"
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { default = "0.0001", currency = "USD" }

[[carriers]]
name = "push"
channel = "push"
adapter = "sandbox"
region = "eu-west"
settings = { latency_ms = 0, receipt_delay_ms = 20 }
rates = { default = "0.0000", currency = "USD" }
"""

@pytest.fixture(scope="module")
def fuzz_engine(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz")
    with Vhost() as amqp_url:
        port = free_port()
        config = workdir / "msgroute.toml"
        config.write_text(tools.engine_config(CARRIERS))
        env = {**os.environ, "MSGROUTE_AMQP_URL": amqp_url,
               "MSGROUTE_DATABASE_URL": f"sqlite:///{workdir / 'fuzz.db'}",
               "MSGROUTE_HTTP_PORT": str(port), "MSGROUTE_PUBLIC_URL": f"http://127.0.0.1:{port}",
               "MSGROUTE_ADMIN_TOKEN": ADMIN_TOKEN, "MSGROUTE_HASH_KEY": "fuzz-pseudonym-key-0123456789",
               "PYTHONPATH": str(Path(__file__).parents[2])}
        engine = Engine(workdir=workdir, config_path=config, env=env, port=port)
        engine.cli("migrate")
        engine.start()
        try:
            yield engine
        finally:
            engine.stop()


@pytest.fixture(scope="module")
def fuzz_key(fuzz_engine) -> str:
    return fuzz_engine.create_account("fuzz")["api_key"]


def schemathesis(engine: Engine, key: str, workdir: Path, *args: str) -> tuple[int, dict, str]:
    """Run the schemathesis CLI against the engine; (exit code, its JSON report, its output)."""
    config = workdir / "schemathesis.toml"
    config.write_text(
        "[checks]\npositive_data_acceptance.enabled = false\nobject_level_authorization.enabled = false\n\n"
        f'[auth.openapi.apiKey]\nbearer = "{key}"\n\n[auth.openapi.adminToken]\nbearer = "{ADMIN_TOKEN}"\n')
    report = workdir / "schemathesis-report.json"
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               f"{engine.base_url}/openapi.json", "--seed", "20261128", "--suppress-health-check", "all",
               # a generated request line or header over 8 KiB is answered 400 and the connection closed
               # at once, which the client sometimes sees as a reset before it reads the 400: try again
               "--request-timeout", "20", "--request-retries", "2", "--continue-on-failure", "--report", "json",
               "--report-json-path", str(report), *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=SCHEMATHESIS_TIMEOUT, cwd=workdir,
                         check=False, env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"})
    data = json.loads(report.read_text()) if report.exists() else {}
    return run.returncode, data, run.stdout + run.stderr


def failure_codes(report: dict) -> dict[str, list[str]]:
    return {f"{f['code']} {f['title']}": f["operations"] for f in report.get("failures", [])}


@pytest.mark.timeout(SCHEMATHESIS_TIMEOUT + 60)
def test_schemathesis_finds_no_5xx_and_no_nonconforming_response(fuzz_engine, fuzz_key, tmp_path):
    code, report, output = schemathesis(
        fuzz_engine, fuzz_key, tmp_path, "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(EXAMPLES), "--workers", "4",
        "--exclude-path", "/admin/accounts/{id}/rotate-key")  # would retire the very key this run uses
    print(output[output.find("SUMMARY") - 40:] if "SUMMARY" in output else output[-3000:])
    operations, cases = report.get("operations", {}), report.get("test_cases", {})
    line = tools.report(
        "schemathesis", examples_per_operation=EXAMPLES, exit_code=code, operations_tested=operations.get("tested"),
        operations_total=operations.get("total"), cases_generated=cases.get("generated"),
        cases_with_failures=cases.get("with_failures"), errored=cases.get("errored"),
        phases={k: v["status"] for k, v in report.get("phases", {}).items()},
        failures=failure_codes(report), seconds=round(report.get("running_time", 0), 1))
    assert report, output[-3000:]
    assert operations.get("tested", 0) >= operations.get("total", 99) - 1, line  # all but rotate-key
    assert report["phases"]["stateful"]["status"] == "success", line
    assert not any(f["code"] == "ST101" for f in report.get("failures", [])), f"server errors: {line}"
    details = "".join(output[output.find(section):][:6000] for section in ("ERRORS", "FAILURES") if section in output)
    assert not report.get("failures"), f"{line}\n{details}"
    # An error is schemathesis failing to complete a request (not a finding about a response). One
    # was seen in about one run in five, in the coverage phase, alongside 400s that aiohttp's parser
    # answers and closes the connection on; more than that is a problem worth a look.
    errors = sum(e.get("count", 1) for e in report.get("errors", []))
    assert errors <= 1, f"{line}\n{details}"
    assert code == 0 or errors == 1, f"{line}\n{details}"


@pytest.mark.timeout(300)
def test_batch_document_matches_the_gateway(fuzz_engine, fuzz_key, tmp_path):
    """The batch operation on its own, every check on: the document types each item as a plain
    object (a bad item is answered inside the 202, SPEC §4), and a 405 on /v1/messages/batch
    allows POST only (the /v1/messages/{id} route matches message ids, not the word `batch`)."""
    code, report, output = schemathesis(fuzz_engine, fuzz_key, tmp_path, "--phases", "coverage",
                                        "--include-path", "/v1/messages/batch", "--workers", "1")
    failures = failure_codes(report)
    line = tools.report("batch document check", exit_code=code, failures=failures)
    assert report, output[-3000:]
    assert not failures, f"{line}\n{output[output.find('FAILURES'):][:3000]}"
    assert code == 0, f"{line}\n{output[-3000:]}"


# --- hand-written malformed input ------------------------------------------------------------

SMS = {"channel": "sms", "to": "+447911123456", "body": "hi"}
EMAIL = {"channel": "email", "to": "alice@example.com", "subject": "s", "body": "b"}


def _json(value) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int, inner: str = "1") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


# (name, method, path, body bytes or None, content type or None, extra headers, accepted statuses)
CASES = [
    ("nesting 100,000 deep", "POST", "/v1/messages", _nested(100_000), "application/json", {}, {400, 413}),
    ("nesting 2,000 deep in metadata", "POST", "/v1/messages",
     b'{"channel":"sms","to":"+447911123456","body":"x","metadata":{"a":' + _nested(2000) + b"}}",
     "application/json", {}, {400}),
    ("nesting 40 deep in metadata", "POST", "/v1/messages",
     _json({**SMS, "metadata": json.loads(_nested(40))}), "application/json", {}, {400}),
    ("nesting 100,000 deep in a batch", "POST", "/v1/messages/batch",
     b'{"messages":' + _nested(100_000, "{}") + b"}", "application/json", {}, {400, 413}),
    ("invalid UTF-8 in a string", "POST", "/v1/messages",
     b'{"channel":"sms","to":"+447911123456","body":"\xff\xfe\xc3"}', "application/json", {}, {400}),
    ("invalid UTF-8 in a key", "POST", "/v1/messages",
     b'{"chan\x80nel":"sms","to":"+447911123456","body":"x"}', "application/json", {}, {400}),
    ("overlong UTF-8 encoding of '/'", "POST", "/v1/messages",
     b'{"channel":"sms","to":"+447911123456","body":"\xc0\xaf"}', "application/json", {}, {400}),
    ("UTF-8-encoded lone surrogate", "POST", "/v1/messages",
     b'{"channel":"sms","to":"+447911123456","body":"\xed\xa0\x80"}', "application/json", {}, {400}),
    ("escaped lone high surrogate in body", "POST", "/v1/messages",
     b'{"channel":"sms","to":"+447911123456","body":"a\\ud800b"}', "application/json", {}, {400, 202}),
    ("escaped lone low surrogate in to", "POST", "/v1/messages",
     b'{"channel":"sms","to":"+44791112\\udc003456","body":"x"}', "application/json", {}, {400}),
    ("escaped lone surrogate in email subject", "POST", "/v1/messages",
     b'{"channel":"email","to":"alice@example.com","subject":"\\udfff","body":"b"}', "application/json", {},
     {400, 202}),
    ("escaped lone surrogate in a metadata key", "POST", "/v1/messages",
     b'{"channel":"sms","to":"+447911123456","body":"x","metadata":{"\\ud83d":"v"}}', "application/json", {},
     {400, 202}),
    ("CR/LF in email subject (header injection)", "POST", "/v1/messages",
     _json({**EMAIL, "subject": "hello\r\nBcc: victim@example.org"}), "application/json", {}, {400}),
    ("bare LF in email subject", "POST", "/v1/messages",
     _json({**EMAIL, "subject": "hello\nX-Injected: 1"}), "application/json", {}, {400}),
    ("CR/LF in email to", "POST", "/v1/messages",
     _json({**EMAIL, "to": "alice@example.com\r\nBcc: victim@example.org"}), "application/json", {}, {400}),
    ("CR/LF in email from", "POST", "/v1/messages",
     _json({**EMAIL, "from": "noreply@example.com\r\nBcc: victim@example.org"}), "application/json", {}, {400}),
    ("NUL in email to", "POST", "/v1/messages",
     _json({**EMAIL, "to": "alice@example.com\u0000bob@example.org"}), "application/json", {}, {400}),
    ("CR/LF in a batch item's subject", "POST", "/v1/messages/batch",
     _json({"messages": [{**EMAIL, "subject": "a\r\nBcc: b@example.org"}]}), "application/json", {}, {202}),
    ("body over max_body_bytes (2 MiB)", "POST", "/v1/messages",
     _json({**SMS, "body": "x" * (2 * 1024 * 1024)}), "application/json", {}, {413}),
    ("batch over max_body_bytes (1.5 MiB)", "POST", "/v1/messages/batch",
     _json({"messages": [{**SMS, "body": "y" * 1500}] * 1000}), "application/json", {}, {413}),
    ("batch of 1001 messages", "POST", "/v1/messages/batch",
     _json({"messages": [SMS] * 1001}), "application/json", {}, {400}),
    ("SMS body of 1,601 characters", "POST", "/v1/messages", _json({**SMS, "body": "z" * 1601}),
     "application/json", {}, {400}),
    ("metadata over 4 KiB", "POST", "/v1/messages", _json({**SMS, "metadata": {"k": "v" * 5000}}),
     "application/json", {}, {400}),
    ("number too large for any integer", "POST", "/v1/messages",
     b'{"channel":"sms","to":"+447911123456","body":"x","validity_period":1' + b"0" * 400 + b"}",
     "application/json", {}, {400}),
    ("float overflow", "POST", "/v1/messages",
     b'{"channel":"sms","to":"+447911123456","body":"x","validity_period":1e999}', "application/json", {}, {400}),
    ("NaN literal", "POST", "/v1/messages", b'{"channel":"sms","to":"+447911123456","validity_period":NaN}',
     "application/json", {}, {400}),
    ("truncated JSON", "POST", "/v1/messages", b'{"channel":"sms","to":"+4479111', "application/json", {}, {400}),
    ("empty body", "POST", "/v1/messages", b"", "application/json", {}, {400}),
    ("JSON null", "POST", "/v1/messages", b"null", "application/json", {}, {400}),
    ("JSON array", "POST", "/v1/messages", b"[1,2]", "application/json", {}, {400}),
    ("batch that is not an object", "POST", "/v1/messages/batch", b'"messages"', "application/json", {}, {400}),
    ("batch items of every JSON type", "POST", "/v1/messages/batch",
     b'{"messages":[null,1,"s",[],true,{}]}', "application/json", {}, {202, 400}),
    ("UTF-16 body", "POST", "/v1/messages", json.dumps(SMS).encode("utf-16"), "application/json", {}, {400}),
    ("text/plain content type", "POST", "/v1/messages", _json(SMS), "text/plain", {}, {415}),
    ("form content type", "POST", "/v1/messages", b"channel=sms&to=%2B447911123456",
     "application/x-www-form-urlencoded", {}, {415}),
    ("no content type", "POST", "/v1/messages", _json(SMS), None, {}, {415}),
    ("Idempotency-Key of 256 characters", "POST", "/v1/messages", _json(SMS), "application/json",
     {"Idempotency-Key": "k" * 256}, {400}),
    ("PUT on a POST-only path", "PUT", "/v1/messages", _json(SMS), "application/json", {}, {405}),
    ("PATCH a message", "PATCH", "/v1/messages/msg_x", b"{}", "application/json", {}, {404, 405}),
    ("list with limit=abc", "GET", "/v1/messages?limit=abc", None, None, {}, {400}),
    ("list with limit=10^30", "GET", "/v1/messages?limit=" + "9" * 30, None, None, {}, {400}),
    ("list with an unparseable since", "GET", "/v1/messages?since=2026-13-45T99:99:99Z", None, None, {}, {400}),
    ("list with a foreign cursor", "GET", "/v1/messages?cursor=%F0%9F%92%A5", None, None, {}, {400}),
    ("list with invalid percent-encoding", "GET", "/v1/messages?status=%ZZ%", None, None, {}, {200, 400}),
    ("message id of 10,000 characters", "GET", "/v1/messages/msg_" + "A" * 10_000, None, None, {}, {404, 414, 400}),
    ("message id with an encoded slash and NUL", "GET", "/v1/messages/msg_%2F..%2F%00", None, None, {}, {404}),
    ("usage grouped by nonsense", "GET", "/v1/usage?group_by=%00", None, None, {}, {400}),
    ("privacy export without to", "GET", "/v1/privacy/export", None, None, {}, {400}),
    ("receipt for an unknown carrier", "POST", "/webhooks/dlr/no-such-carrier", b"{}", "application/json", {},
     {404}),
    ("unsigned receipt", "POST", "/webhooks/dlr/sms-uk", b'{"id":"x","status":"delivered"}', "application/json",
     {}, {403}),
    ("receipt with invalid UTF-8 and no signature", "POST", "/webhooks/dlr/sms-uk", b"\xff\xfe{", "application/json",
     {}, {403}),
]

UNAUTHENTICATED = {"/webhooks/dlr/no-such-carrier", "/webhooks/dlr/sms-uk"}

# (name, path, raw header line): KEY is replaced by the account's API key
RAW_CASES = [
    ("key with a non-ASCII UTF-8 character", "/v1/messages", b"Authorization: Bearer \xc3\xa9KEY"),
    ("key with a DEL byte", "/v1/messages", b"Authorization: Bearer \x7fKEY"),
    ("oversize header (100 KB)", "/v1/messages", b"X-Filler: " + b"a" * 100_000),
    ("Twilio signature, non-ASCII", "/webhooks/dlr/twilio-uk", b"X-Twilio-Signature: \xc3\xa9"),
]
# header values that are not ASCII where the engine compares or hashes them: refused before they
# reach hashlib or hmac (the bearer-token parser; each adapter's signature check)
RAW_CASES_NOT_ASCII = [
    ("key with a byte that is not UTF-8", "/v1/messages", b"Authorization: Bearer \xffKEY"),
    ("admin token with a byte that is not UTF-8", "/admin/accounts/acc_x/suspend", b"Authorization: Bearer \xff"),
    ("sandbox signature, non-ASCII", "/webhooks/dlr/sms-uk", b"X-Sandbox-Signature: \xc3\xa9\xc3\xa9"),
    ("sandbox signature with a byte that is not UTF-8", "/webhooks/dlr/sms-uk", b"X-Sandbox-Signature: \xffab"),
    ("Twilio signature with a byte that is not UTF-8", "/webhooks/dlr/twilio-uk", b"X-Twilio-Signature: \xffab"),
    ("Twilio inbound signature with a byte that is not UTF-8", "/webhooks/inbound/twilio-uk",
     b"X-Twilio-Signature: \xffab"),
]
# the HTTP parser's own refusals (bytes it will not read as a request) come as plain text
PARSER_REFUSALS = {"message id of 10,000 characters", "key with a DEL byte", "oversize header (100 KB)"}


async def _call(http: aiohttp.ClientSession, base: str, key: str, case) -> tuple[int, bytes]:
    _, method, path, body, content_type, extra, _ = case
    headers = {} if path in UNAUTHENTICATED else {"Authorization": f"Bearer {key}"}
    if content_type:
        headers["Content-Type"] = content_type
    headers.update(extra)
    data = io.BytesIO(body) if body is not None and len(body) > 512 * 1024 else body  # (aiohttp warns otherwise)
    async with http.request(method, base + path, data=data, headers=headers,
                            skip_auto_headers=() if content_type else ("Content-Type",)) as resp:
        return resp.status, await resp.read()


async def _raw(port: int, request: bytes) -> bytes:
    """One raw HTTP/1.1 exchange, for what an HTTP client library refuses to send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def _raw_cases(engine: Engine, key: str, cases) -> list[tuple[str, int, set, bytes]]:
    out = []
    for name, path, header in cases:
        body = _json(SMS)
        header = header.replace(b"KEY", b"" if path.startswith("/webhooks") else key.encode())
        reply = await _raw(engine.port, f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + header +
                           b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                           b"\r\nConnection: close\r\n\r\n" + body)
        status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0
        out.append((name, status, {400, 401, 403, 431}, reply.split(b"\r\n\r\n", 1)[-1]))
    return out


def _error_shaped(body: bytes) -> bool:
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)


@pytest.mark.timeout(300)
async def test_malformed_input_gets_4xx_never_500(fuzz_engine, fuzz_key):
    results = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for case in CASES:
            status, body = await _call(http, fuzz_engine.base_url, fuzz_key, case)
            results.append((case[0], status, case[6], body))
        results += await _raw_cases(fuzz_engine, fuzz_key, RAW_CASES)  # bytes no client library will send
        # the gateway still works afterwards
        async with http.post(f"{fuzz_engine.base_url}/v1/messages", json=SMS,
                             headers={"Authorization": f"Bearer {fuzz_key}"}) as resp:
            healthy = resp.status

    by_status: dict[int, int] = {}
    for _, status, _, _ in results:
        by_status[status] = by_status.get(status, 0) + 1
    unexpected = [(name, status, sorted(allowed), body[:160]) for name, status, allowed, body in results
                  if status not in allowed]
    unshaped = [name for name, status, _, body in results if 400 <= status < 500 and not _error_shaped(body)]
    line = tools.report("malformed input", cases=len(results), by_status=dict(sorted(by_status.items())),
                        unexpected=len(unexpected), not_in_error_shape=unshaped, healthy_afterwards=healthy)
    for name, status, _, body in results:
        print(f"  {status}  {name}: {body[:100]!r}")
    assert not [r for r in results if r[1] >= 500 or r[1] == 0], line
    assert not unexpected, f"{unexpected}; {line}"
    assert healthy == 202, line
    # the application's own errors carry SPEC §4's shape
    assert set(unshaped) <= PARSER_REFUSALS, line


@pytest.mark.timeout(120)
async def test_header_values_that_are_not_ascii_get_4xx_never_500(fuzz_engine, fuzz_key):
    results = await _raw_cases(fuzz_engine, fuzz_key, RAW_CASES_NOT_ASCII)
    line = tools.report("non-ASCII header values", **{name: status for name, status, _, _ in results})
    server_errors = [name for name, status, _, _ in results if status >= 500 or status == 0]
    assert not server_errors, f"5xx for {server_errors}; {line}"
    assert all(status in allowed for _, status, allowed, _ in results), line
    # refused by the application, so in SPEC §4's error shape
    assert [name for name, _, _, body in results if not _error_shaped(body)] == [], line
