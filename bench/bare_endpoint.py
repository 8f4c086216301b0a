"""The bare baseline for ingest: an aiohttp endpoint that parses the JSON and publishes it with a confirm.

POST /v1/messages: read the body, parse it (orjson), publish it persistent and mandatory
to a durable quorum queue, wait for the broker's confirm, answer 202 with an id. Nothing
else: no authentication, validation, store or metrics. One process, on uvloop.

    python bench/bare_endpoint.py --url AMQP_URL --port PORT
"""
from __future__ import annotations

import argparse
import asyncio
import uuid

import aio_pika
import orjson
import uvloop
from aiohttp import web

QUEUE = "bare.ingest"


async def serve(url: str, port: int) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})

    async def post_message(request: web.Request) -> web.Response:
        payload = orjson.loads(await request.read())
        await channel.default_exchange.publish(
            aio_pika.Message(orjson.dumps(payload), content_type="application/json",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            QUEUE, mandatory=True, timeout=5)
        return web.json_response({"id": uuid.uuid4().hex, "status": "queued"}, status=202,
                                 dumps=lambda v: orjson.dumps(v).decode())

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/messages", post_message)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.url, args.port))


if __name__ == "__main__":
    main()
