"""A small OpenID provider on 127.0.0.1 for the unit tests of shared/auth and shared/tokens.

It serves discovery, a JWKS and a client-credentials token endpoint, counts what it is asked and
can be told to misbehave (refuse, fail, answer slowly, sign for another audience): the failure
modes the real provider (tests/identity) cannot be made to show on demand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

AUDIENCE = "bangfu"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(claims: dict[str, Any], *, alg: str, kid: str, secret: bytes = b"") -> str:
    """A token whose header says `alg` (HS256 keyed with `secret`, or none): what an attacker
    makes with a published public key, which no verifier of ours may accept."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    if alg == "none":
        return f"{header}.{payload}."
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


class StandInProvider:
    """Discovery, JWKS and token endpoint; keys by kid, the first one signs."""

    def __init__(self, *, client_id: str = "svc-test", client_secret: str = "s3cret") -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.add_key("k1")
        self.access_token_ttl = 600
        self.requests: dict[str, int] = {"discovery": 0, "jwks": 0, "token": 0}
        self.refused_while_down = 0
        self.token_requests: list[dict[str, Any]] = []
        self.down = False  # answer 503 to everything
        self.delay = 0.0  # seconds before each answer
        self.audiences: list[str] = []  # audiences of the next tokens, one each, then AUDIENCE
        self.stated_issuer: str | None = None  # what discovery says (default: the real one)
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider._answer(self, "GET")

            def do_POST(self) -> None:
                provider._answer(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def add_key(self, kid: str, *, first: bool = False) -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(ec.SECP256R1())
        self.keys = {kid: key, **self.keys} if first else {**self.keys, kid: key}
        return key

    def public_pem(self, kid: str) -> bytes:
        return (
            self.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "sub": self.client_id,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + self.access_token_ttl,
            "jti": uuid.uuid4().hex,
            "scope": "registry:read",
            "regions": ["41"],
            "client_id": self.client_id,
            **overrides,
        }

    def sign(self, kid: str | None = None, **overrides: Any) -> str:
        kid = kid or next(iter(self.keys))
        return jwt.encode(self.claims(**overrides), self.keys[kid], "ES256", headers={"kid": kid})

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        time.sleep(self.delay)
        path = handler.path.split("?")[0]
        if self.down:
            self.refused_while_down += 1
            self._send(handler, 503, {"error": "down"})
        elif method == "GET" and path == "/.well-known/openid-configuration":
            self.requests["discovery"] += 1
            self._send(
                handler,
                200,
                {
                    "issuer": self.stated_issuer or self.issuer,
                    "jwks_uri": f"{self.issuer}/jwks",
                    "token_endpoint": f"{self.issuer}/token",
                },
            )
        elif method == "GET" and path == "/jwks":
            self.requests["jwks"] += 1
            keys = [
                {**ECAlgorithm.to_jwk(k.public_key(), as_dict=True), "kid": kid, "use": "sig"}
                for kid, k in self.keys.items()
            ]
            self._send(handler, 200, {"keys": keys})
        elif method == "POST" and path == "/token":
            self._token(handler)
        else:
            self._send(handler, 404, {"error": "not_found"})

    def _token(self, handler: BaseHTTPRequestHandler) -> None:
        self.requests["token"] += 1
        length = int(handler.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()}
        basic = handler.headers.get("Authorization", "")
        self.token_requests.append({"form": form, "authorization": basic})
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if basic != f"Basic {expected}" or form.get("grant_type") != "client_credentials":
            self._send(handler, 401, {"error": "invalid_client"})
            return
        audience = self.audiences.pop(0) if self.audiences else AUDIENCE
        token = self.sign(scope=form.get("scope", ""), aud=audience)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.access_token_ttl}
        self._send(handler, 200, body)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
