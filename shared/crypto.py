"""Field encryption at rest and keyed blind indexes, in an international or a 国密 (GM) profile."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

Profile = Literal["intl", "gm"]

PROFILES: tuple[Profile, ...] = get_args(Profile)
KEY_LENGTHS: Mapping[Profile, int] = MappingProxyType({"intl": 32, "gm": 16})
MIN_INDEX_KEY_LENGTH = 32
TOKEN_VERSION = "v1"
# Random 96-bit nonces are safe for well under 2**32 encryptions per key; rotate long before.
NONCE_LENGTH = 12
TAG_LENGTH = 16
# Key ids travel inside tokens and settings strings, so they must not contain `.`, `,` or `:`.
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class DecryptionError(Exception):
    """A token that cannot be decrypted with this keyring and context."""


@dataclass(frozen=True)
class Keyring:
    """The encryption keys (by id, one current) and the blind-index key of one service."""

    profile: Profile
    encryption_keys: Mapping[str, bytes] = field(repr=False)
    current_key_id: str
    index_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {self.profile!r}")
        if not self.encryption_keys:
            raise ValueError("encryption_keys must hold at least one key")
        expected = KEY_LENGTHS[self.profile]
        for key_id, key in self.encryption_keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"key id {key_id!r} must be 1-32 of A-Z, a-z, 0-9, '_', '-'")
            if len(key) != expected:
                raise ValueError(
                    f"encryption key {key_id!r} is {len(key)} bytes; "
                    f"the {self.profile!r} profile needs {expected}"
                )
        if self.current_key_id not in self.encryption_keys:
            raise ValueError(f"current key id {self.current_key_id!r} is not in encryption_keys")
        if len(self.index_key) < MIN_INDEX_KEY_LENGTH:
            raise ValueError(
                f"index_key is {len(self.index_key)} bytes; at least {MIN_INDEX_KEY_LENGTH} needed"
            )
        # A copy the caller cannot mutate behind the frozen dataclass's back.
        object.__setattr__(self, "encryption_keys", MappingProxyType(dict(self.encryption_keys)))

    @classmethod
    def from_strings(cls, profile: Profile, keys: str, index_key: str) -> Keyring:
        """Parse `k2:BASE64,k1:BASE64` (first is current) and a base64 index key."""
        entries = [entry.strip() for entry in keys.split(",")]
        if not any(entries):
            raise ValueError("encryption keys are empty; expected 'k1:BASE64[,k0:BASE64...]'")
        parsed: dict[str, bytes] = {}
        for position, entry in enumerate(entries, start=1):
            # Errors name the position and key id, never the entry, which holds key material.
            key_id, colon, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not colon or not key_id:
                raise ValueError(f"encryption key entry {position} is not 'KEY_ID:BASE64'")
            if key_id in parsed:
                raise ValueError(f"encryption key id {key_id!r} appears twice")
            try:
                parsed[key_id] = _b64decode(encoded)
            except ValueError:
                raise ValueError(
                    f"encryption key entry {position} ({key_id!r}) is not valid base64"
                ) from None
        try:
            index = _b64decode(index_key)
        except ValueError:
            raise ValueError("index key is not valid base64") from None
        current_key_id = next(iter(parsed))
        return cls(
            profile=profile, encryption_keys=parsed, current_key_id=current_key_id, index_key=index
        )


def generate_keys(profile: Profile) -> tuple[str, str]:
    """Fresh `(keys, index_key)` settings strings with one encryption key, id `k1`."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
    key = base64.urlsafe_b64encode(os.urandom(KEY_LENGTHS[profile])).decode("ascii")
    index_key = base64.urlsafe_b64encode(os.urandom(MIN_INDEX_KEY_LENGTH)).decode("ascii")
    return f"k1:{key}", index_key


def encrypt(keyring: Keyring, plaintext: str, *, context: str) -> str:
    """Encrypt with the current key into `v1.<profile>.<key id>.<base64url>`, bound to `context`."""
    _check_label("context", context)
    key_id = keyring.current_key_id
    header = f"{TOKEN_VERSION}.{keyring.profile}.{key_id}"
    nonce = os.urandom(NONCE_LENGTH)
    sealed = _seal(
        keyring.profile,
        keyring.encryption_keys[key_id],
        nonce,
        plaintext.encode("utf-8"),
        _associated_data(header, context),
    )
    return f"{header}.{_b64url_encode(nonce + sealed)}"


def decrypt(keyring: Keyring, token: str, *, context: str) -> str:
    """Decrypt a token from `encrypt`, raising DecryptionError unless it authenticates."""
    _check_label("context", context)
    parts = token.split(".")
    if len(parts) != 4:
        raise DecryptionError("malformed token: expected 'v1.<profile>.<key id>.<data>'")
    version, profile, key_id, body = parts
    if version != TOKEN_VERSION:
        raise DecryptionError(f"unsupported token version {version[:16]!r}")
    if profile != keyring.profile:
        raise DecryptionError(
            f"token was encrypted in profile {profile[:16]!r}; the keyring is {keyring.profile!r}"
        )
    key = keyring.encryption_keys.get(key_id)
    if key is None:
        raise DecryptionError(f"token names key {key_id[:32]!r}, which is not in the keyring")
    data = _b64url_decode_canonical(body)
    if data is None or len(data) < NONCE_LENGTH + TAG_LENGTH:
        raise DecryptionError("malformed token: the data is not base64url of nonce, text and tag")
    header = f"{version}.{profile}.{key_id}"
    try:
        plaintext = _open(
            keyring.profile,
            key,
            data[:NONCE_LENGTH],
            data[NONCE_LENGTH:],
            _associated_data(header, context),
        )
        return plaintext.decode("utf-8")
    except (InvalidTag, UnicodeDecodeError):
        raise DecryptionError(
            f"token failed authentication with key {key_id!r} and context {context!r}: "
            "it was altered or belongs to another field"
        ) from None


def blind_index(keyring: Keyring, value: str, *, purpose: str) -> str:
    """Hex HMAC of `purpose + NUL + value` under the index key, for exact lookup and uniqueness."""
    _check_label("purpose", purpose)
    mac = hmac.HMAC(keyring.index_key, hash_algorithm(keyring.profile))
    mac.update(f"{purpose}\x00{value}".encode())
    return mac.finalize().hex()


def hash_algorithm(profile: Profile) -> hashes.HashAlgorithm:
    """SHA-256 (intl) or SM3 (gm): the hash of every digest, MAC and blind index."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
    return hashes.SHA256() if profile == "intl" else hashes.SM3()


def digest(profile: Profile, data: bytes) -> str:
    """Hex SHA-256 (intl) or SM3 (gm) of `data`."""
    hasher = hashes.Hash(hash_algorithm(profile))
    hasher.update(data)
    return hasher.finalize().hex()


def _seal(profile: Profile, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    if profile == "intl":
        return AESGCM(key).encrypt(nonce, plaintext, aad)
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return ciphertext + encryptor.tag


def _open(profile: Profile, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    if profile == "intl":
        return AESGCM(key).decrypt(nonce, sealed, aad)
    ciphertext, tag = sealed[:-TAG_LENGTH], sealed[-TAG_LENGTH:]
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor.update(ciphertext) + decryptor.finalize()


def _associated_data(header: str, context: str) -> bytes:
    # The header is authenticated too, so no part of a token can be edited without detection.
    return f"{header}\x00{context}".encode()


def _check_label(name: str, label: str) -> None:
    # A NUL inside a label would let two different (label, value) pairs share one MAC input.
    if not label or "\x00" in label:
        raise ValueError(f"{name} must be a non-empty string without NUL characters")


def _b64decode(text: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not; ValueError otherwise."""
    compact = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    if not compact:
        raise ValueError("empty base64")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64url_decode_canonical(text: str) -> bytes | None:
    # Lenient decoding would let several strings decode to one ciphertext; accept exactly one.
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return data if _b64url_encode(data) == text else None
