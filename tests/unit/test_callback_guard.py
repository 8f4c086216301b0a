"""SSRF guard on callback URLs: at ingest (syntax + resolved addresses) and at connect time."""
import aiohttp
import pytest
from aiohttp import web

from router.errors import ValidationError
from router.settings import from_dict
from workers.callbacks import CallbackSender, sign, verify
from workers.ingest.policy import IngestPolicy

REFUSED = ["http://127.0.0.1/x", "http://localhost/x", "http://10.1.2.3/x", "http://169.254.169.254/latest",
           "http://[::1]/x", "http://[::ffff:127.0.0.1]/x", "http://[64:ff9b::7f00:1]/x", "http://[2002:7f00:1::]/x",
           "http://2130706433/x", "http://0x7f.1/x", "http://127.1/x", "http://0177.0.0.1/x", "http://[fe80::1]/x",
           "http://224.0.0.1/x", "http://0.0.0.0/x", "ftp://example.com/x", "http://user:pw@example.com/x",
           "not a url"]


@pytest.mark.parametrize("url", REFUSED)
async def test_ingest_refuses_non_public_callback_urls(url):
    with pytest.raises(ValidationError) as caught:
        await IngestPolicy(from_dict({}), store=None).check_callback_url(url)
    assert caught.value.code == "invalid_callback_url" and caught.value.field == "callback_url"


async def test_public_literal_passes_and_private_allowed_when_configured():
    await IngestPolicy(from_dict({}), store=None).check_callback_url("https://93.184.216.34/hook")
    allowing = IngestPolicy(from_dict({"callbacks": {"allow_private_networks": True}}), store=None)
    await allowing.check_callback_url("http://127.0.0.1:9/hook")


async def test_sender_never_connects_to_a_private_address():
    hits = []

    async def decoy(request):
        hits.append(request.path)
        return web.Response()

    app = web.Application()
    app.router.add_post("/{tail:.*}", decoy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            sender = CallbackSender(from_dict({}), store=None, publisher=None, http=http)
            outcomes = [await sender._post(url, b"{}", "secret") for url in (
                f"http://127.0.0.1:{port}/a", f"http://localhost:{port}/b", f"http://2130706433:{port}/c")]
            await sender.aclose()
    finally:
        await runner.cleanup()
    assert outcomes == ["blocked"] * 3
    assert hits == []


async def test_a_redirect_is_never_followed():
    """Even where private networks are allowed (so the first hop is reachable on loopback), a 3xx
    is the receiver's answer, not a new destination: the decoy it points at sees nothing."""
    hits = []

    async def decoy(request):
        hits.append(request.path)
        return web.Response()

    async def redirecting(request):
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{decoy_port}/internal")

    runners = []
    for handler in (decoy, redirecting):
        app = web.Application()
        app.router.add_post("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
    decoy_port, redirect_port = (r.addresses[0][1] for r in runners)
    try:
        async with aiohttp.ClientSession() as http:
            sender = CallbackSender(from_dict({"callbacks": {"allow_private_networks": True}}), store=None,
                                    publisher=None, http=http)
            outcome = await sender._post(f"http://127.0.0.1:{redirect_port}/hook", b"{}", "secret")
            await sender.aclose()
    finally:
        for runner in runners:
            await runner.cleanup()
    assert outcome == "refused"
    assert hits == []


def test_signature_roundtrip_and_staleness():
    header = sign("s3cret", b'{"a":1}', timestamp=1_700_000_000)
    assert verify("s3cret", b'{"a":1}', header, now=1_700_000_100)
    assert not verify("s3cret", b'{"a":2}', header, now=1_700_000_100)
    assert not verify("other", b'{"a":1}', header, now=1_700_000_100)
    assert not verify("s3cret", b'{"a":1}', header, now=1_700_000_301)
