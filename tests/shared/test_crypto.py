import base64

import pytest

from shared.crypto import (
    DecryptionError,
    Keyring,
    Profile,
    _open,
    _seal,
    blind_index,
    decrypt,
    digest,
    encrypt,
    generate_keys,
)

CONTEXT = "household_member.identity_number"
PROFILES: tuple[Profile, ...] = ("intl", "gm")
KEY_LENGTH = {"intl": 32, "gm": 16}
TEXTS = ["411302199001011234", "张三", "吉祥 𠮷 㐂 and ASCII", "", "a" * 5000]


def _ring(
    profile: Profile,
    *,
    keys: dict[str, bytes] | None = None,
    current: str = "k1",
    index_key: bytes = b"i" * 32,
) -> Keyring:
    keys = keys if keys is not None else {"k1": b"1" * KEY_LENGTH[profile]}
    return Keyring(
        profile=profile, encryption_keys=keys, current_key_id=current, index_key=index_key
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _flip(token: str, position: int) -> str:
    """The token with one bit flipped in byte `position` of nonce + ciphertext + tag."""
    header, _, body = token.rpartition(".")
    data = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data[position] ^= 0x01
    return f"{header}.{base64.urlsafe_b64encode(bytes(data)).decode().rstrip('=')}"


class TestKeyring:
    @pytest.mark.parametrize(("profile", "length"), [("intl", 16), ("intl", 24), ("gm", 32)])
    def test_a_key_of_the_wrong_length_is_refused_naming_the_key_id(
        self, profile: Profile, length: int
    ) -> None:
        keys = {"k1": b"1" * KEY_LENGTH[profile], "old-key": b"2" * length}
        expected = KEY_LENGTH[profile]
        with pytest.raises(ValueError, match=rf"'old-key' is {length} bytes.*needs {expected}"):
            _ring(profile, keys=keys)

    def test_a_current_key_id_missing_from_the_ring_is_refused(self) -> None:
        with pytest.raises(ValueError, match="current key id 'k9'"):
            _ring("intl", current="k9")

    def test_an_index_key_shorter_than_32_bytes_is_refused(self) -> None:
        with pytest.raises(ValueError, match="index_key is 31 bytes; at least 32"):
            _ring("gm", index_key=b"i" * 31)

    def test_an_empty_ring_or_an_unknown_profile_is_refused(self) -> None:
        with pytest.raises(ValueError, match="at least one key"):
            _ring("intl", keys={})
        with pytest.raises(ValueError, match="profile must be one of"):
            _ring("des", keys={"k1": b"1" * 8})  # type: ignore[arg-type]

    def test_a_key_id_that_would_break_the_token_format_is_refused(self) -> None:
        with pytest.raises(ValueError, match=r"key id 'k\.1'"):
            _ring("intl", keys={"k.1": b"1" * 32}, current="k.1")

    def test_the_repr_does_not_show_key_material(self) -> None:
        text = repr(_ring("intl", keys={"k1": b"S" * 32}, index_key=b"T" * 32))
        assert "SSSS" not in text
        assert "TTTT" not in text
        assert text == "Keyring(profile='intl', current_key_id='k1')"

    def test_changing_the_callers_dict_afterwards_does_not_change_the_ring(self) -> None:
        keys = {"k1": b"1" * 32}
        ring = _ring("intl", keys=keys)
        keys["k1"] = b"2" * 32
        assert ring.encryption_keys["k1"] == b"1" * 32


class TestFromStrings:
    def test_the_first_entry_is_the_current_key_and_all_entries_are_kept(self) -> None:
        ring = Keyring.from_strings(
            "intl", f"k2:{_b64(b'2' * 32)}, k1:{_b64(b'1' * 32)}", _b64(b"i" * 32)
        )
        assert ring.profile == "intl"
        assert ring.current_key_id == "k2"
        assert dict(ring.encryption_keys) == {"k2": b"2" * 32, "k1": b"1" * 32}
        assert ring.index_key == b"i" * 32

    def test_standard_and_urlsafe_base64_with_or_without_padding_are_accepted(self) -> None:
        key = bytes([0xFB, 0xFF]) * 8  # encodes with '+' and '/' in standard base64
        standard = base64.b64encode(key).decode()
        urlsafe = base64.urlsafe_b64encode(key).decode().rstrip("=")
        assert "+" in standard or "/" in standard
        ring = Keyring.from_strings("gm", f"a:{standard},b:{urlsafe}", _b64(b"i" * 40))
        assert dict(ring.encryption_keys) == {"a": key, "b": key}
        assert ring.index_key == b"i" * 40

    def test_an_entry_that_is_not_base64_is_named_without_echoing_it(self) -> None:
        with pytest.raises(ValueError, match=r"entry 2 \('k1'\) is not valid base64") as caught:
            Keyring.from_strings("intl", f"k2:{_b64(b'2' * 32)},k1:not*base64!", _b64(b"i" * 32))
        assert "not*base64" not in str(caught.value)

    def test_an_entry_without_a_key_id_is_named_by_its_position(self) -> None:
        secret = _b64(b"1" * 32)
        with pytest.raises(ValueError, match="entry 1 is not 'KEY_ID:BASE64'") as caught:
            Keyring.from_strings("intl", secret, _b64(b"i" * 32))
        assert secret not in str(caught.value)
        with pytest.raises(ValueError, match="entry 2 is not 'KEY_ID:BASE64'"):
            Keyring.from_strings("intl", f"k1:{secret},:{secret}", _b64(b"i" * 32))

    def test_a_repeated_key_id_is_refused(self) -> None:
        with pytest.raises(ValueError, match="'k1' appears twice"):
            Keyring.from_strings(
                "intl", f"k1:{_b64(b'1' * 32)},k1:{_b64(b'2' * 32)}", _b64(b"i" * 32)
            )

    def test_empty_keys_are_refused(self) -> None:
        with pytest.raises(ValueError, match="encryption keys are empty"):
            Keyring.from_strings("intl", " ", _b64(b"i" * 32))

    def test_an_index_key_that_is_not_base64_is_refused(self) -> None:
        with pytest.raises(ValueError, match="index key is not valid base64"):
            Keyring.from_strings("intl", f"k1:{_b64(b'1' * 32)}", "%%%")

    def test_a_key_of_the_wrong_length_for_the_profile_is_refused_naming_it(self) -> None:
        with pytest.raises(ValueError, match="'k1' is 32 bytes; the 'gm' profile needs 16"):
            Keyring.from_strings("gm", f"k1:{_b64(b'1' * 32)}", _b64(b"i" * 32))


class TestGenerateKeys:
    @pytest.mark.parametrize("profile", PROFILES)
    def test_generated_strings_parse_into_a_working_ring_with_key_k1(
        self, profile: Profile
    ) -> None:
        keys, index_key = generate_keys(profile)
        ring = Keyring.from_strings(profile, keys, index_key)
        assert ring.current_key_id == "k1"
        assert len(ring.encryption_keys["k1"]) == KEY_LENGTH[profile]
        assert len(ring.index_key) == 32
        assert decrypt(ring, encrypt(ring, "张三", context=CONTEXT), context=CONTEXT) == "张三"

    def test_every_call_gives_fresh_keys(self) -> None:
        assert generate_keys("intl") != generate_keys("intl")


class TestEncrypt:
    @pytest.mark.parametrize("profile", PROFILES)
    def test_the_token_names_version_profile_and_key_and_is_ascii(self, profile: Profile) -> None:
        token = encrypt(_ring(profile), "411302199001011234", context=CONTEXT)
        version, token_profile, key_id, body = token.split(".")
        assert (version, token_profile, key_id) == ("v1", profile, "k1")
        assert token.isascii()
        # 12-byte nonce + 18 bytes of text + 16-byte tag, base64url without padding.
        assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == 12 + 18 + 16

    @pytest.mark.parametrize("profile", PROFILES)
    def test_the_same_plaintext_encrypts_differently_each_time(self, profile: Profile) -> None:
        ring = _ring(profile)
        tokens = {encrypt(ring, "411302199001011234", context=CONTEXT) for _ in range(50)}
        assert len(tokens) == 50

    def test_an_empty_context_is_refused(self) -> None:
        with pytest.raises(ValueError, match="context must be a non-empty string"):
            encrypt(_ring("intl"), "x", context="")


class TestDecrypt:
    @pytest.mark.parametrize("profile", PROFILES)
    @pytest.mark.parametrize("text", TEXTS)
    def test_a_round_trip_returns_the_plaintext(self, profile: Profile, text: str) -> None:
        ring = _ring(profile)
        assert decrypt(ring, encrypt(ring, text, context=CONTEXT), context=CONTEXT) == text

    @pytest.mark.parametrize(
        ("profile", "token"),
        [
            ("intl", "v1.intl.k1.I9IhyRp--UolV4UE0IlLhKzn6uvZhCtAflpj8iBTnjj6h1r0uzvKbMEJkKpSPQ"),
            ("gm", "v1.gm.k1.aLh_r7LhqYZOYQN7Qdzt7RVP2k4j0R6p7DYTk5NVM7VixznpWaN-Wfn4e5K7WQ"),
        ],
    )
    def test_a_token_stored_by_an_earlier_release_still_decrypts(
        self, profile: Profile, token: str
    ) -> None:
        ring = _ring(profile, keys={"k1": bytes(range(KEY_LENGTH[profile]))})
        assert decrypt(ring, token, context=CONTEXT) == "411302199001011234"

    @pytest.mark.parametrize("profile", PROFILES)
    @pytest.mark.parametrize(
        ("part", "position"),
        [
            ("nonce", 0),
            ("nonce", 11),
            ("body", 12),
            ("body", 20),
            ("tag", -16),
            ("tag", -1),
        ],
    )
    def test_a_flipped_bit_anywhere_fails_authentication(
        self, profile: Profile, part: str, position: int
    ) -> None:
        ring = _ring(profile)
        token = encrypt(ring, "411302199001011234", context=CONTEXT)
        with pytest.raises(DecryptionError, match="failed authentication with key 'k1'"):
            decrypt(ring, _flip(token, position), context=CONTEXT)

    @pytest.mark.parametrize("profile", PROFILES)
    def test_a_token_copied_into_another_column_does_not_decrypt(self, profile: Profile) -> None:
        ring = _ring(profile)
        token = encrypt(ring, "13800138000", context="household_member.phone")
        with pytest.raises(DecryptionError, match=f"context '{CONTEXT}'"):
            decrypt(ring, token, context=CONTEXT)

    def test_relabelling_a_token_with_another_key_id_in_the_ring_fails(self) -> None:
        ring = _ring("intl", keys={"k1": b"1" * 32, "k2": b"1" * 32})
        token = encrypt(ring, "张三", context=CONTEXT)
        with pytest.raises(DecryptionError, match="failed authentication with key 'k2'"):
            decrypt(ring, token.replace(".k1.", ".k2."), context=CONTEXT)

    def test_a_token_from_the_other_profile_is_refused_by_name(self) -> None:
        token = encrypt(_ring("gm"), "张三", context=CONTEXT)
        with pytest.raises(DecryptionError, match="profile 'gm'; the keyring is 'intl'"):
            decrypt(_ring("intl"), token, context=CONTEXT)

    def test_an_unknown_version_is_refused(self) -> None:
        ring = _ring("intl")
        token = encrypt(ring, "张三", context=CONTEXT)
        with pytest.raises(DecryptionError, match="unsupported token version 'v2'"):
            decrypt(ring, "v2" + token[2:], context=CONTEXT)

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "plain text",
            "v1.intl.k1",
            "v1.intl.k1.AAAA.extra",
            "v1.intl.k1.not base64!",
            "v1.intl.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # 28 bytes would need 38 chars
            "v1.intl.k1." + "A" * 36,  # 27 bytes: shorter than nonce + tag
            "v1.intl.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",  # padding is not written
        ],
    )
    def test_a_malformed_token_is_refused(self, token: str) -> None:
        with pytest.raises(DecryptionError, match="malformed token"):
            decrypt(_ring("intl"), token, context=CONTEXT)

    def test_a_non_canonical_base64_spelling_of_a_valid_token_is_refused(self) -> None:
        ring = _ring("intl")
        token = encrypt(ring, "张三", context=CONTEXT)
        # The last character carries 2 or 4 unused bits; setting one gives the same bytes.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(token[-1])
        variant = token[:-1] + alphabet[last ^ 1]
        with pytest.raises(DecryptionError, match="malformed token"):
            decrypt(ring, variant, context=CONTEXT)


class TestRotation:
    @pytest.mark.parametrize("profile", PROFILES)
    def test_old_tokens_decrypt_and_new_tokens_name_the_new_key(self, profile: Profile) -> None:
        k1, k2 = b"1" * KEY_LENGTH[profile], b"2" * KEY_LENGTH[profile]
        old_ring = _ring(profile, keys={"k1": k1})
        old_token = encrypt(old_ring, "吉祥 𠮷", context=CONTEXT)
        new_ring = _ring(profile, keys={"k2": k2, "k1": k1}, current="k2")
        new_token = encrypt(new_ring, "吉祥 𠮷", context=CONTEXT)
        assert decrypt(new_ring, old_token, context=CONTEXT) == "吉祥 𠮷"
        assert new_token.split(".")[2] == "k2"
        assert decrypt(new_ring, new_token, context=CONTEXT) == "吉祥 𠮷"

    def test_a_ring_that_dropped_the_old_key_names_it_when_refusing(self) -> None:
        old_token = encrypt(_ring("intl"), "张三", context=CONTEXT)
        ring = _ring("intl", keys={"k2": b"2" * 32}, current="k2")
        with pytest.raises(DecryptionError, match="names key 'k1', which is not in the keyring"):
            decrypt(ring, old_token, context=CONTEXT)


class TestBlindIndex:
    @pytest.mark.parametrize("profile", PROFILES)
    def test_the_index_is_stable_hex_of_256_bits(self, profile: Profile) -> None:
        first = blind_index(_ring(profile), "411302199001011234", purpose="identity_number")
        again = blind_index(_ring(profile), "411302199001011234", purpose="identity_number")
        assert first == again
        assert len(first) == 64
        assert int(first, 16) >= 0

    def test_the_index_is_the_hmac_of_purpose_nul_value(self) -> None:
        import hashlib
        import hmac

        expected = hmac.new(b"i" * 32, b"phone\x0013800138000", hashlib.sha256).hexdigest()
        assert blind_index(_ring("intl"), "13800138000", purpose="phone") == expected

    def test_different_values_purposes_keys_and_profiles_give_different_indexes(self) -> None:
        value = "411302199001011234"
        indexes = {
            blind_index(_ring("intl"), value, purpose="identity_number"),
            blind_index(_ring("intl"), "411302199001011235", purpose="identity_number"),
            blind_index(_ring("intl"), value, purpose="phone"),
            blind_index(_ring("intl", index_key=b"j" * 32), value, purpose="identity_number"),
            blind_index(_ring("gm"), value, purpose="identity_number"),
        }
        assert len(indexes) == 5

    def test_the_encryption_key_does_not_change_the_index(self) -> None:
        rotated = _ring("intl", keys={"k2": b"2" * 32}, current="k2")
        assert blind_index(_ring("intl"), "张三", purpose="name") == blind_index(
            rotated, "张三", purpose="name"
        )

    def test_a_purpose_that_is_empty_or_holds_a_nul_is_refused(self) -> None:
        with pytest.raises(ValueError, match="purpose must be a non-empty string"):
            blind_index(_ring("intl"), "x", purpose="")
        with pytest.raises(ValueError, match="purpose must be a non-empty string"):
            blind_index(_ring("intl"), "x", purpose="phone\x00id")


class TestDigest:
    @pytest.mark.parametrize(
        ("profile", "data", "expected"),
        [
            ("intl", b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("intl", b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("gm", b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
            ("gm", b"", "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b"),
        ],
    )
    def test_known_answers(self, profile: Profile, data: bytes, expected: str) -> None:
        assert digest(profile, data) == expected

    def test_an_unknown_profile_is_refused(self) -> None:
        with pytest.raises(ValueError, match="profile must be one of"):
            digest("md5", b"abc")  # type: ignore[arg-type]


class TestCiphers:
    """Published test vectors, so each profile is the standard algorithm and not a look-alike."""

    def test_aes_256_gcm_matches_the_gcm_specification_test_case_14(self) -> None:
        sealed = _seal("intl", bytes(32), bytes(12), bytes(16), b"")
        assert sealed.hex() == ("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")
        assert _open("intl", bytes(32), bytes(12), sealed, b"") == bytes(16)

    def test_sm4_gcm_matches_rfc_8998_appendix_a(self) -> None:
        key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
        nonce = bytes.fromhex("00001234567800000000ABCD")
        aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
        plaintext = bytes.fromhex(
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCC"
            "DDDDDDDDDDDDDDDDEEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFF"
            "EEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
        )
        sealed = _seal("gm", key, nonce, plaintext, aad)
        assert sealed.hex().upper() == (
            "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
            "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
            "83DE3541E4C2B58177E065A9BF7B62EC"
        )
        assert _open("gm", key, nonce, sealed, aad) == plaintext
