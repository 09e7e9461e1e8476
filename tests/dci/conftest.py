"""The conformance run takes its tokens from the suite's real OpenID provider (issue 15 asks
for the identity issue's tokens): the provider's fixtures, shared with tests/identity."""

from tests.identity.conftest import _session_idp, idp

__all__ = ["_session_idp", "idp"]
