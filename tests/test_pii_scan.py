"""The whole-run PII scan must itself be able to fail."""

from tests.conftest import plaintext_pii
from tests.helpers import identity_number


class TestPlaintextPiiScan:
    def test_it_finds_identity_and_phone_numbers_in_an_event_body(self) -> None:
        body = f'{{"n": "{identity_number()}", "p": "13812345678"}}'
        assert plaintext_pii(body) == [identity_number(), "13812345678"]

    def test_it_ignores_masked_numbers_ids_and_timestamps(self) -> None:
        body = (
            '{"n": "411302********123X", "p": "138****5678", '
            '"id": "01a2086d-239c-7cc7-adb8-a13812345678", "time": "2026-11-23T12:57:55Z", '
            '"income_fen": 6300000}'
        )
        assert plaintext_pii(body) == []
