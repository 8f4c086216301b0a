"""GET /openapi.json: an OpenAPI 3.1 document of every route the gateway serves.

The schemas come from pydantic models: request bodies from the models that validate them
(router.requests.SendRequest), responses from the small models below, which mirror what the
handlers return. The document walks the app's router at start-up, so a route added to
build_app is always listed; one missing from OPERATIONS gets a generic entry until it is
described here. Built once at start-up and served from memory.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import models_json_schema

from router.requests import SendRequest

Channel = Literal["sms", "email", "push"]
STATUSES = ("scheduled", "queued", "routed", "sent", "delivered", "undelivered", "failed", "rejected", "expired",
            "canceled")
ERROR_CODES = (
    "invalid_json", "invalid_request", "unknown_channel", "invalid_phone_number", "invalid_email",
    "invalid_device_token", "device_unregistered", "no_route", "region_not_allowed", "body_too_long",
    "metadata_too_large", "invalid_callback_url", "recipient_opted_out", "invalid_sender", "invalid_send_at",
    "unauthorized", "account_suspended", "not_found", "not_cancelable", "payload_too_large",
    "unsupported_media_type", "rate_limited", "would_expire", "unavailable", "invalid_signature")
MAX_BATCH = 1000


# --- response and wrapper models (what the handlers return) -----------------------------

class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Open):
    code: str = Field(description="stable machine-readable code: " + ", ".join(ERROR_CODES))
    message: str = Field(description="human-readable explanation")
    field: str | None = Field(default=None, description="the offending request field, when there is one")


class Error(_Open):
    """SPEC §4's error body."""

    error: ErrorDetail


# Each item is checked by the handler, not at the batch's door: a bad one (a non-object too) is
# answered by its index inside the 202 (SPEC §4), so the document cannot constrain it: a schema
# violation here would promise a 400 the gateway does not give.
BatchItemRequest = Annotated[Any, WithJsonSchema({
    "description": "a send request: an object with the fields of SendRequest (#/components/schemas/SendRequest). "
                   "Each is validated on its own: a bad one, or one that is not an object, gets an error at its "
                   "index in the 202 and the rest are sent",
})]


class BatchRequest(BaseModel):
    """Up to 1000 send requests; each is validated on its own and answered by its index."""

    # (no extra="forbid": the gateway reads `messages` and ignores any other key)
    messages: list[BatchItemRequest] = Field(min_length=1, max_length=MAX_BATCH)


class Accepted(_Open):
    id: str = Field(pattern=r"^msg_", description="the message id (the first one's, on an idempotent replay)")
    status: str = Field(description="`queued`, or `scheduled` with `send_at`; a replay shows the current status")
    channel: Channel
    created_at: str = Field(description="RFC 3339 UTC with milliseconds")


class BatchItem(_Open):
    index: int = Field(ge=0)
    id: str | None = None
    status: str | None = None
    replayed: bool | None = None
    error: ErrorDetail | None = None


class BatchResults(_Open):
    results: list[BatchItem]


class StatusError(_Open):
    code: str
    message: str | None = None


class HistoryEntry(_Open):
    status: str
    at: str
    error: StatusError | None = None


class MessagePart(_Open):
    """One part of a multipart SMS whose carrier reports each part (its receipts are aggregated:
    `delivered` when every part is, else the worst failed part's outcome)."""

    part: int = Field(ge=1)
    carrier_message_id: str
    status: Literal["sent", "delivered", "undelivered", "failed"]
    error: StatusError | None = None
    updated_at: str


class Message(_Open):
    """The message resource (SPEC §4)."""

    id: str
    account_id: str
    channel: Channel
    to: str | None = Field(description="null or a pseudonym once retention or erasure removed it")
    from_: str | None = Field(alias="from")
    body: str | None
    subject: str | None
    status: str = Field(description=", ".join(STATUSES))
    status_history: list[HistoryEntry]
    carrier: str | None
    region: str | None
    units: int | None
    price: str | None = Field(description="decimal string")
    currency: str | None
    error: StatusError | None
    metadata: dict[str, Any] | None
    created_at: str
    updated_at: str
    send_at: str | None = Field(default=None, description="present for a message sent with `send_at`")
    parts: list[MessagePart] | None = Field(
        default=None, description="multipart SMS whose carrier reports each part; `error.code` of the message may "
                                  "then be `part_undelivered` / `part_failed` when the carrier gave none")
    late_receipts: list[dict[str, Any]] | None = Field(
        default=None, description="receipts that arrived after the message was already final (e.g. after the "
                                  "receipt timeout): recorded, never re-opening it")


class MessagePage(_Open):
    data: list[Message]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class Health(_Open):
    status: Literal["ok"]


class Readiness(_Open):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(description="broker, store and consumers: `ok` or what is wrong")


class AnyObject(_Open):
    """A JSON object; see the operation's description."""


class ReviewRequest(BaseModel):
    reason: str = Field(max_length=2000)


class EraseRequest(BaseModel):
    to: str = Field(description="the address whose data is erased")


class SenderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Channel
    address: str = Field(description="E.164 number, short code or alphanumeric id; email address")
    country: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$", description="ISO 3166 alpha-2")
    rate_limit: float | None = Field(default=None, gt=0, description="messages per second from this sender")


class SuppressionCreate(BaseModel):
    channel: Channel
    address: str


class ReviewRequested(_Open):
    account_id: str
    status: Literal["review_requested"]


class SuspendRequest(BaseModel):
    reason: str | None = Field(default=None, description="recorded with the suspension")


class RotateKeyRequest(BaseModel):
    grace_seconds: float | None = Field(default=None, ge=0, description="how long the old key keeps working")


class AccountList(_Open):
    data: list[AnyObject]


class RotatedKey(_Open):
    id: str
    api_key: str = Field(description="shown only here")
    old_key_valid_for_seconds: float


# --- query models (rendered as parameters) ---------------------------------------------

class MessageQuery(BaseModel):
    status: str | None = Field(default=None, description=", ".join(STATUSES))
    channel: Channel | None = None
    since: str | None = Field(default=None, description="RFC 3339 time or a date")
    until: str | None = Field(default=None, description="RFC 3339 time or a date")
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, description="`next_cursor` of the previous page")


class UsageQuery(BaseModel):
    since: str | None = Field(default=None, description="RFC 3339 time or a date")
    until: str | None = Field(default=None, description="RFC 3339 time or a date")
    group_by: Literal["day", "carrier", "channel", "country"] | None = None


class AccountQuery(BaseModel):
    status: str | None = Field(default=None, description="only accounts in this status (active, suspended, …)")


class ExportQuery(BaseModel):
    to: str = Field(description="the address whose data is exported")


# --- operations --------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    summary: str
    tag: str
    auth: Literal["key", "admin", "none"]
    ok: tuple[str, type[BaseModel] | str | None] = ("200", AnyObject)  # str = a media type, no schema
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | Literal["carrier"] | None = None
    query: type[BaseModel] | None = None
    idempotent: bool = False
    description: str | None = None
    body_required: bool = True
    error_notes: tuple[tuple[int, str], ...] = ()  # (status, what it means here) where not ERROR_DESCRIPTIONS


SEND_ERRORS = (400, 401, 403, 413, 415, 429, 503)
OPERATIONS: dict[tuple[str, str], Op] = {
    ("POST", "/v1/messages"): Op(
        "Send one message", "messages", "key", ("202", Accepted), SEND_ERRORS, body=SendRequest, idempotent=True,
        description="202 only after RabbitMQ confirmed the message. 503: the broker did not confirm; retry with "
                    "the same Idempotency-Key. If the publish went out but its confirm never came, the message is "
                    "kept and still sent, and the retry returns its id (202, Idempotent-Replayed)."),
    ("POST", "/v1/messages/batch"): Op(
        "Send up to 1000 messages", "messages", "key", ("202", BatchResults), SEND_ERRORS, body=BatchRequest,
        idempotent=True, description="400 if the batch itself is malformed or too long; otherwise each "
                                     "message is answered at its index, with an id or an error."),
    ("GET", "/v1/messages"): Op("List the account's messages, newest first", "messages", "key",
                                ("200", MessagePage), (400, 401), query=MessageQuery),
    ("GET", "/v1/messages/{id}"): Op("Get one message", "messages", "key", ("200", Message), (401, 404)),
    ("DELETE", "/v1/messages/{id}"): Op("Cancel a scheduled message", "messages", "key", ("200", Message),
                                        (401, 403, 404, 409)),
    ("GET", "/v1/usage"): Op("Usage summary", "usage", "key", errors=(400, 401), query=UsageQuery),
    ("GET", "/v1/privacy/export"): Op("Export what is held about an address", "privacy", "key",
                                      errors=(400, 401), query=ExportQuery),
    ("POST", "/v1/privacy/erase"): Op(
        "Erase an address's content and pseudonymise it", "privacy", "key", ("200", AnyObject),
        (400, 401, 415, 503), body=EraseRequest, error_notes=((503, (
            "`unavailable`: erasure needs a pseudonymisation key and none is configured: set "
            "MSGROUTE_HASH_KEY (or `[privacy] hash_key`) to a secret of at least 16 characters; "
            "nothing was erased")),)),
    ("POST", "/v1/account/review-request"): Op("A suspended account asks for human review", "account", "key",
                                               ("202", ReviewRequested), (400, 401, 409, 415), body=ReviewRequest),
    ("GET", "/admin/accounts"): Op("List accounts", "admin", "admin", ("200", AccountList), (401, 403),
                                   query=AccountQuery),
    ("GET", "/admin/accounts/{id}"): Op("An account with its suspension and review history", "admin", "admin",
                                        errors=(401, 403, 404)),
    ("POST", "/admin/accounts/{id}/suspend"): Op("Suspend an account", "admin", "admin", errors=(400, 401, 403, 404,
                                                                                                 415),
                                                 body=SuspendRequest, body_required=False),
    ("POST", "/admin/accounts/{id}/reinstate"): Op("Reinstate a suspended account", "admin", "admin",
                                                   errors=(401, 403, 404, 409)),
    ("POST", "/admin/accounts/{id}/confirm-suspension"): Op("Confirm a suspension after review", "admin", "admin",
                                                            errors=(401, 403, 404, 409)),
    ("POST", "/admin/accounts/{id}/rotate-key"): Op("Issue a new API key", "admin", "admin", ("200", RotatedKey),
                                                    (400, 401, 403, 404, 415), body=RotateKeyRequest,
                                                    body_required=False),
    ("POST", "/v1/senders"): Op("Add a sender to the pool", "senders", "key", ("201", AnyObject),
                                (400, 401, 403, 415), body=SenderCreate),
    ("GET", "/v1/senders"): Op("List the sender pool", "senders", "key", errors=(401,)),
    ("DELETE", "/v1/senders/{id}"): Op("Remove a sender", "senders", "key", ("204", None), (401, 404)),
    ("GET", "/v1/suppressions"): Op("List suppressed addresses", "suppressions", "key", errors=(401,)),
    ("POST", "/v1/suppressions"): Op("Suppress an address", "suppressions", "key", ("201", AnyObject),
                                     (400, 401, 415), body=SuppressionCreate),
    ("DELETE", "/v1/suppressions/{address}"): Op("Remove a suppression", "suppressions", "key",
                                                 ("204", None), (400, 401, 404)),
    ("POST", "/webhooks/dlr/{carrier}"): Op(
        "Delivery receipt from a carrier", "webhooks", "none", ("200", "text/plain"), (403, 404, 503),
        body="carrier", description="In the carrier's own format and encoding, verified with its own signature "
                                    "scheme (for example X-Twilio-Signature)."),
    ("GET", "/webhooks/dlr/{carrier}"): Op(
        "Delivery receipt from a carrier, as a query string", "webhooks", "none", ("200", "text/plain"),
        (403, 404, 503), description="For carriers such as Vonage that send receipts as GET query strings."),
    ("POST", "/webhooks/inbound/{carrier}"): Op(
        "Inbound message from a carrier (opt-out keywords)", "webhooks", "none", ("2XX", "text/plain"),
        (403, 404, 503), body="carrier"),
    ("GET", "/healthz"): Op("The process is alive", "operations", "none", ("200", Health)),
    ("GET", "/readyz"): Op("Broker and store reachable, consumers attached", "operations", "none",
                           ("200", Readiness), (503,)),
    ("GET", "/metrics"): Op("Prometheus metrics of every engine process", "operations", "none",
                            ("200", "text/plain")),
    ("GET", "/openapi.json"): Op("This document", "operations", "none", ("200", AnyObject)),
}

PATH_PARAMETERS = {
    "id": "a message id (`msg_…`), or an account id under /admin",
    "carrier": "the carrier's name in the configuration",
    "address": "an E.164 number, email address or device token",
}
ERROR_DESCRIPTIONS = {
    400: "bad input: see `error.code` and `error.field`", 401: "`unauthorized`: missing or unknown bearer key",
    403: "`account_suspended`; `forbidden` under /admin when no admin token is set; "
         "`invalid_signature` on webhooks", 404: "`not_found`",
    409: "`not_cancelable` or another conflict with the current state",
    413: "`payload_too_large`: the body is over `gateway.max_body_bytes`",
    415: "`unsupported_media_type`: send `Content-Type: application/json`",
    429: "`rate_limited`, or `would_expire` (the carrier's backlog — `field: validity_period` — or the pool "
         "sender's backlog at its rate — `field: from` — would hold the message past its validity); "
         "see `Retry-After`",
    503: "`unavailable`: the broker could not confirm (nothing was accepted); retry, with the same "
         "Idempotency-Key", 500: "internal error",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def _fallback(method: str, path: str) -> Op:
    """A route added to the gateway but not yet described above."""
    if path.startswith("/admin"):
        auth, tag = "admin", "admin"
    elif path.startswith("/v1/"):
        auth, tag = "key", path.split("/")[2]
    elif path.startswith("/webhooks/"):
        auth, tag = "none", "webhooks"
    else:
        auth, tag = "none", "operations"
    body = AnyObject if method in ("POST", "PUT", "PATCH") else None
    errors = (400, 401, 404) if auth != "none" else ()
    return Op(f"{method} {path}", tag, auth, ("2XX", AnyObject), errors, body=body)


def served_operations(app: web.Application) -> list[tuple[str, str]]:
    """(METHOD, path template) for every route, without the HEAD twins aiohttp adds to GETs."""
    seen = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*"):
            continue
        key = (route.method, resource.canonical)
        if key not in seen:
            seen.append(key)
    return seen


def _components() -> dict:
    models: list[type[BaseModel]] = [Error]
    for op in OPERATIONS.values():
        models += [m for m in (op.body, op.ok[1]) if isinstance(m, type)]
    unique = list(dict.fromkeys(models))
    modes = [(m, "validation" if m in _request_models() else "serialization") for m in unique]
    _, schema = models_json_schema(modes, ref_template="#/components/schemas/{model}")
    return schema.get("$defs", {})


def _request_models() -> set:
    return {op.body for op in OPERATIONS.values() if isinstance(op.body, type)}


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _query_parameters(model: type[BaseModel]) -> list[dict]:
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        prop.pop("title", None)
        description = prop.pop("description", None)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            parameter["description"] = description
        out.append(parameter)
    return out


def _error_response(status: int, note: str | None = None) -> dict:
    response = {"description": note or ERROR_DESCRIPTIONS.get(status, "error"),
                "content": {"application/json": {"schema": _ref(Error)}}}
    if status in (429, 503) and note is None:  # an operation's own 503 is not a retry-later
        response["headers"] = RETRY_AFTER
    return response


def _operation(method: str, path: str, op: Op) -> dict:
    operation: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}{path}").strip("_"),
        "summary": op.summary, "tags": [op.tag],
        "security": [{"apiKey": []}] if op.auth == "key" else [{"adminToken": []}] if op.auth == "admin" else [],
    }
    if op.description:
        operation["description"] = op.description
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"},
                   "description": PATH_PARAMETERS.get(name, name)} for name in re.findall(r"{(\w+)}", path)]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if op.idempotent:
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                           "description": "the same key from the same account within 24 h returns the first "
                                          "message and sends nothing new"})
    if parameters:
        operation["parameters"] = parameters
    if op.body == "carrier":
        operation["requestBody"] = {"required": False, "content": {
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}}}}
    elif op.body is not None:
        operation["requestBody"] = {"required": op.body_required,
                                    "content": {"application/json": {"schema": _ref(op.body)}}}
    status, model = op.ok
    ok: dict[str, Any] = {"description": {"201": "created", "202": "accepted", "204": "done, no content"}.get(
        status, "OK")}
    if isinstance(model, str):
        ok["content"] = {model: {"schema": {"type": "string"}}}
    elif model is not None:
        ok["content"] = {"application/json": {"schema": _ref(model)}}
    if op.idempotent:
        ok["headers"] = {"Idempotent-Replayed": {"description": "`true` on an idempotent replay",
                                                 "schema": {"type": "string", "enum": ["true"]}}}
    responses = {status: ok}
    notes = dict(op.error_notes)
    for code in op.errors:
        responses[str(code)] = _error_response(code, notes.get(code))
    responses["default"] = {"description": "any other error, in the same shape",
                            "content": {"application/json": {"schema": _ref(Error)}}}
    operation["responses"] = responses
    return operation


def document(app: web.Application) -> dict:
    """The OpenAPI 3.1 document for the routes `app` serves."""
    paths: dict[str, dict] = {}
    for method, path in served_operations(app):
        op = OPERATIONS.get((method, path)) or _fallback(method, path)
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    try:
        version = metadata.version("msgroute")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        version = "0.0.0"
    return {
        "openapi": "3.1.0",
        "info": {"title": "msgroute", "version": version,
                 "description": "Asynchronous message routing: SMS, email and push. Errors are "
                                '`{"error": {"code", "message", "field"}}`.'},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "the account's API key"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "MSGROUTE_ADMIN_TOKEN"},
            },
        },
        "tags": [{"name": name} for name in dict.fromkeys(
            op.tag for op in (OPERATIONS.get(k) or _fallback(*k) for k in served_operations(app)))],
    }


# --- serving -----------------------------------------------------------------------------

@dataclass
class _Cache:
    body: bytes = b""


CACHE = web.AppKey("msgroute.openapi", _Cache)


def install(app: web.Application) -> None:
    """Serve GET /openapi.json, rendered once when the app starts (after every route is added)."""
    app[CACHE] = _Cache()
    app.router.add_get("/openapi.json", openapi_json)
    app.on_startup.append(_render)


async def _render(app: web.Application) -> None:
    app[CACHE].body = orjson.dumps(document(app))


async def openapi_json(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    if not cache.body:  # an app started without its startup signals (tests)
        cache.body = orjson.dumps(document(request.app))
    return web.Response(body=cache.body, content_type="application/json")
