"""Every error leaves the gateway as SPEC §4's JSON body: never a traceback."""
from __future__ import annotations

import logging

import orjson
from aiohttp import web

from router.errors import ValidationError

log = logging.getLogger("msgroute.gateway")

_HTTP_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 429: "rate_limited",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict | None = None) -> web.Response:
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.Response(status=status, body=orjson.dumps({"error": error}), content_type="application/json",
                        headers=headers)


def json_response(data, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ValidationError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "payload_too_large", "request body is larger than gateway.max_body_bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        return error_response(exc.status, code, exc.reason or code, headers={
            k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")})
    except Exception:  # noqa: BLE001 — a bug must not leak a traceback to clients
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal_error", "internal error; it has been logged")
