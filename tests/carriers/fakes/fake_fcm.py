"""A fake FCM: the HTTP v1 send endpoint and Google's OAuth2 token endpoint, served by
aiohttp on 127.0.0.1 (ephemeral port).

The token endpoint verifies the RS256 JWT assertion with the service account's public key
and issues opaque access tokens; the send endpoint accepts only those tokens. The outcome
of a send depends on the device token's prefix:

| prefix        | reply                                                          |
|---------------|----------------------------------------------------------------|
| `unregistered`| 404 NOT_FOUND, FcmError UNREGISTERED                            |
| `invalid`     | 400 INVALID_ARGUMENT, field violation on `message.token`        |
| `badpayload`  | 400 INVALID_ARGUMENT, field violation on `message.data`         |
| `unavailable` | 503 UNAVAILABLE, Retry-After: 7                                 |
| `quota`       | 429 RESOURCE_EXHAUSTED (QUOTA_EXCEEDED), Retry-After: 30        |
| `internal`    | 500 INTERNAL                                                   |
| anything else | 200 `{"name": "projects/<project>/messages/<n>"}`                |
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@dataclass
class SendRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    json: Any


@dataclass
class TokenRequest:
    form: dict[str, str]
    header: dict[str, Any]  # the assertion's JOSE header
    claims: dict[str, Any]  # the verified assertion claims


def _error(status: int, code: str, message: str, *details: dict, headers: dict | None = None) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": code, "details": list(details)}}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class FakeFcm:
    public_key: Any  # the service account's RSA public key
    client_email: str
    project_id: str = "demo-project"
    expires_in: int = 3600
    sends: list[SendRequest] = field(default_factory=list)  # every send request, 401s included
    token_requests: list[TokenRequest] = field(default_factory=list)  # verified ones only
    problems: list[str] = field(default_factory=list)  # why a token request was refused
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    accept_tokens: bool = True  # False: every send answers 401, fresh token or not
    url: str = ""

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    async def __aenter__(self) -> FakeFcm:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def revoke_all(self) -> None:
        """Make every access token issued so far answer 401, as after a key rotation."""
        self.revoked.update(self.issued)

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        try:
            if form.get("grant_type") != JWT_BEARER:
                raise ValueError(f"grant_type {form.get('grant_type')!r}")
            assertion = str(form.get("assertion", ""))
            claims = jwt.decode(assertion, self.public_key, algorithms=["RS256"], audience=self.token_url,
                                options={"require": ["iss", "aud", "iat", "exp", "scope"]})
            if claims["iss"] != self.client_email:
                raise ValueError(f"iss {claims['iss']!r}")
            if FCM_SCOPE not in str(claims["scope"]).split():
                raise ValueError(f"scope {claims['scope']!r}")
        except (ValueError, jwt.PyJWTError) as exc:
            self.problems.append(str(exc))
            return web.json_response({"error": "invalid_grant", "error_description": str(exc)}, status=400)
        self.token_requests.append(TokenRequest(form={k: str(v) for k, v in form.items()},
                                                header=jwt.get_unverified_header(assertion), claims=claims))
        token = f"ya29.fake-{len(self.issued) + 1}"
        self.issued.append(token)
        return web.json_response({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})

    async def _send(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        self.sends.append(SendRequest(request.path, {k.lower(): v for k, v in request.headers.items()}, payload))
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not self.accept_tokens or bearer not in self.issued or bearer in self.revoked:
            return _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if request.match_info["project"] != self.project_id:
            return _error(404, "NOT_FOUND", "Requested entity was not found.")
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("token"), str):
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if any(not isinstance(v, str) for v in (message.get("data") or {}).values()):
            return _error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data' (Map), Expected a string")
        token = message["token"]
        if token.startswith("unregistered"):
            return _error(404, "NOT_FOUND", "Requested entity was not found.",
                          {"@type": FCM_ERROR, "errorCode": "UNREGISTERED"})
        if token.startswith("invalid"):
            return _error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                          {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
                          {"@type": BAD_REQUEST, "fieldViolations": [
                              {"field": "message.token", "description": "Invalid registration token"}]})
        if token.startswith("badpayload"):
            return _error(400, "INVALID_ARGUMENT", "Invalid data payload key: from",
                          {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
                          {"@type": BAD_REQUEST, "fieldViolations": [
                              {"field": "message.data", "description": "Invalid data payload key: from"}]})
        if token.startswith("unavailable"):
            return _error(503, "UNAVAILABLE", "The service is currently unavailable.",
                          {"@type": FCM_ERROR, "errorCode": "UNAVAILABLE"}, headers={"Retry-After": "7"})
        if token.startswith("quota"):
            return _error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.",
                          {"@type": FCM_ERROR, "errorCode": "QUOTA_EXCEEDED"}, headers={"Retry-After": "30"})
        if token.startswith("internal"):
            return _error(500, "INTERNAL", "Internal error encountered.",
                          {"@type": FCM_ERROR, "errorCode": "INTERNAL"})
        return web.json_response({"name": f"projects/{self.project_id}/messages/{next(self._ids)}"})
