"""Envelope signatures: ed25519 in the HTTP-signature style DCI peers use (Beckn's form).

`signature` is `keyId="<sender_id>|<key_id>|ed25519",algorithm="ed25519",created="<unix>",
expires="<unix>",headers="(created) (expires) digest",signature="<base64>"`, over the signing
string `(created): <c>\\n(expires): <e>\\ndigest: BLAKE-512=<base64 of the BLAKE2b-512 of the
canonical JSON of {"header": …, "message": …}>`. Canonical JSON: keys sorted, no whitespace,
UTF-8 (RFC 8785 for the strings and integers these envelopes hold).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNED_HEADERS = "(created) (expires) digest"
LIFETIME_SECONDS = 300
CLOCK_SKEW_SECONDS = 60
_PARAM = re.compile(r'\s*([a-zA-Z]+)="([^"]*)"\s*(?:,|$)')


class SignatureMissing(Exception):
    """A sender that must sign sent no signature."""


class SignatureInvalid(Exception):
    """The signature does not parse, names another sender, has expired or does not verify."""


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(header: Any, message: Any) -> str:
    body = canonical({"header": header, "message": message})
    return base64.b64encode(hashlib.blake2b(body, digest_size=64).digest()).decode()


def _signing_string(created: int, expires: int, digest: str) -> bytes:
    return f"(created): {created}\n(expires): {expires}\ndigest: BLAKE-512={digest}".encode()


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A registered key: the raw 32 bytes in base64 (or base64url), or a PEM."""
    if "BEGIN PUBLIC KEY" in text:
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("a registered DCI sender key must be ed25519")
        return key
    raw = base64.urlsafe_b64decode(
        text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4)
    )
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class Signer:
    """The registry's own key: signs sync answers and callbacks, published as a JWK."""

    private_key: Ed25519PrivateKey
    subscriber_id: str

    @property
    def key_id(self) -> str:
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return hashlib.sha256(raw).hexdigest()[:16]

    def sign(self, header: Any, message: Any, *, now: float | None = None) -> str:
        created = int(now if now is not None else time.time())
        expires = created + LIFETIME_SECONDS
        signature = self.private_key.sign(
            _signing_string(created, expires, _digest(header, message))
        )
        return (
            f'keyId="{self.subscriber_id}|{self.key_id}|ed25519",algorithm="ed25519",'
            f'created="{created}",expires="{expires}",headers="{SIGNED_HEADERS}",'
            f'signature="{base64.b64encode(signature).decode()}"'
        )

    def jwks(self) -> dict[str, Any]:
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        x = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": x,
                    "kid": self.key_id,
                    "use": "sig",
                    "alg": "EdDSA",
                }
            ]
        }


def load_signer(key_file: Path, subscriber_id: str) -> Signer:
    """The registry's signing key, created once (atomically, mode 0600) when missing."""
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        temporary = key_file.with_name(f".{key_file.name}.{secrets.token_hex(6)}.tmp")
        temporary.write_bytes(pem)
        temporary.chmod(0o600)
        try:
            os.link(temporary, key_file)
        except FileExistsError:
            pass  # another process created it first: that key is the key
        finally:
            temporary.unlink()
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{key_file} is not an ed25519 private key")
    return Signer(key, subscriber_id)


def verify(
    signature: str | None,
    *,
    sender_id: str,
    header: Any,
    message: Any,
    key: Ed25519PublicKey,
    now: float | None = None,
) -> None:
    """Raise SignatureMissing or SignatureInvalid unless `signature` is the sender's, current."""
    if not signature:
        raise SignatureMissing(f"sender {sender_id} must sign its messages")
    params = dict(_PARAM.findall(signature))
    try:
        key_sender, _key_id, algorithm = params["keyId"].split("|")
        created, expires = int(params["created"]), int(params["expires"])
        value = base64.b64decode(params["signature"], validate=True)
    except (KeyError, ValueError) as exc:
        raise SignatureInvalid(
            "the signature is not in the keyId/created/expires/signature form"
        ) from exc
    if key_sender != sender_id:
        raise SignatureInvalid("the signature's keyId names another sender")
    if algorithm != "ed25519" or params.get("algorithm", "ed25519") != "ed25519":
        raise SignatureInvalid("only ed25519 signatures are accepted")
    if params.get("headers", SIGNED_HEADERS) != SIGNED_HEADERS:
        raise SignatureInvalid(f'the signed headers must be "{SIGNED_HEADERS}"')
    moment = now if now is not None else time.time()
    if created > moment + CLOCK_SKEW_SECONDS or expires < moment - CLOCK_SKEW_SECONDS:
        raise SignatureInvalid("the signature is not current (created/expires)")
    try:
        key.verify(value, _signing_string(created, expires, _digest(header, message)))
    except InvalidSignature as exc:
        raise SignatureInvalid("the signature does not verify with the sender's key") from exc
