"""Every route of the four services, walked from the apps themselves, called five ways.

For each route the matrix finds in an app (nothing here lists them) it calls, on data owned by
region 4113:
  1. without a token                                   → 401;
  2. with a 4113 token holding every scope but the route's → 403 (read from its `require`);
  3. with a 4201 token holding every scope             → 404 for what 4113 owns, nothing of
                                                         4113 in a list or a statistic, a
                                                         refusal for a write naming 4113 —
     both of another client and of the owner's own client (a region is not a client's
     property: a token that no longer covers 4113 sees nothing of it);
  4. with a token whose `regions` claim is empty       → the same, and nothing of 4201 either;
  5. as the 4201 caller with a 4113 id or identity number inside its own request → refused;
  6. a write the owner made with an Idempotency-Key, replayed by the owner's client holding a
     4201 token                                        → refused, not the stored answer.
Last it calls every route as the owner, who must get what the others are refused, so that a
refusal proves the confinement and not a wrong request; and a 404 must read exactly as the 404
for an id nobody has.

A route that is open sits in OPEN with its reason; a route the matrix cannot call (a path
parameter without a value, a write without a body) fails with what to add. Every failure of a
service is collected and shown in one table.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import Depends, FastAPI
from fastapi.routing import iter_route_contexts
from openpyxl import load_workbook
from starlette.routing import Mount

from services.registry.domain.workflow import TRANSITIONS
from services.registry.service import PII_READ
from shared.auth import require
from tests.conftest import running
from tests.helpers import bearer
from tests.security.conftest import (
    INTRUDER_CLIENT,
    OWNER_CLIENT,
    Call,
    Served,
)

# Routes anyone may call without a token, each with the reason it is safe.
OPEN: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness probe for the orchestrator: answers 'ok', reads nothing",
    ("GET", "/readyz"): "readiness probe: names only the dependencies (database, schema, NATS)",
    ("GET", "/metrics"): "Prometheus scrape: counters and gauges, no household data; kept off "
    "the public ingress by the deployment",
    ("GET", "/openapi.json"): "the published API contract",
    ("GET", "/docs"): "Swagger UI of the published contract",
    ("GET", "/docs/oauth2-redirect"): "Swagger UI's OAuth2 helper page",
    ("GET", "/redoc"): "ReDoc of the published contract",
    ("GET", "/v1/events/schemas"): "the published event contract (JSON Schemas, no data)",
    ("GET", "/v1/events/schemas/{type_}"): "one published event schema (no data)",
    ("GET", "/v1/events/asyncapi.json"): "the published AsyncAPI document (no data)",
    ("GET", "/.well-known/jwks.json"): "the registry's public DCI signing keys (no data)",
}

# Routes that need a token but no scope: what they show is the caller's own or nobody's.
ANY_SCOPE: dict[tuple[str, str], str] = {
    ("GET", "/v1/departments"): "transport and circuit health of the departments, no person",
    ("GET", "/v1/inbox"): "the caller's own inbox, found by its client id",
    ("POST", "/v1/inbox/{message_id}/read"): "marks a message of the caller's own inbox",
    ("POST", "/v1/inbox/{message_id}/unread"): "marks a message of the caller's own inbox",
}

# Routes whose scope depends on the request and is checked inside the service: the scope the
# matrix's call needs, and why.
SCOPE_IN_SERVICE: dict[tuple[str, str], tuple[frozenset[str], str]] = {
    ("POST", "/v1/households/{household_id}/steps/{step}"): (
        frozenset({"review:county"}),
        "each step needs its reviewer's scope, checked by the workflow (exit: review:county)",
    ),
}

# Routes whose kind the matrix cannot tell from method and path, each with the reason.
KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/v1/departments"): ("unconfined", "department health, not region data"),
    ("GET", "/v1/parameters/{region}"): ("owned", "the parameters in force in the named region"),
    ("GET", "/v1/parameters/{region}/{key}"): ("owned", "a parameter's values in the region"),
    ("POST", "/v1/consents/search"): ("list", "a search: the body names a 4113 person"),
    ("POST", "/v1/persons/queries"): ("list", "a search: the body names a 4113 person"),
    ("POST", "/v1/households:search"): ("list", "a search: the body names a 4113 person"),
    ("POST", "/v1/households:batch-get"): (
        "list",
        "a batch read: the body names 4113 households, which others get as not found",
    ),
    ("POST", "/v1/imports/ledger"): ("report", "a row-by-row report: 4113 rows not imported"),
    ("GET", "/v1/imports/ledger/template"): (
        "unconfined",
        "an empty ledger to fill in: the columns and their lists, no household",
    ),
    ("POST", "/registry/sync/search"): ("list", "a DCI search: the body names a 4113 household"),
    ("POST", "/registry/sync/txn/status"): ("list", "the status of the owner's DCI search"),
    # Accepted for later (ACK): what follows reaches only the caller's regions, which
    # tests/dci/test_router.py proves on the callbacks and notifications themselves.
    ("POST", "/registry/search"): ("async", "a DCI search answered by callback"),
    ("POST", "/registry/txn/status"): ("async", "a DCI txn status answered by callback"),
    ("POST", "/registry/subscribe"): ("async", "a subscription confined to the token's regions"),
    ("POST", "/registry/unsubscribe"): ("async", "the owner's subscription, by its code"),
}

# Path parameters that name a resource (owned by a region); others name a region, a month…
RESOURCE_IDS = frozenset(
    {
        "household_id",
        "member_id",
        "verification_id",
        "consent_id",
        "batch_id",
        "decision_id",
        "subscription_id",
        "delivery_id",
        "message_id",
    }
)


# -- what a route is, read from the app ------------------------------------------------------

_REQUIRE = require().__code__


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scopes: frozenset[str] | None  # None: no `require` among its dependencies
    parameters: tuple[str, ...]
    has_body: bool
    idempotent: bool = False  # takes an Idempotency-Key

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _dependants(dependant: Any) -> Iterator[Any]:
    """The route's dependant and every dependency below it."""
    stack = [dependant]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.dependencies)


def _required_scopes(dependant: Any) -> frozenset[str] | None:
    """The scopes of every `shared.auth.require` dependency, read from its closure."""
    found: frozenset[str] | None = None
    for current in _dependants(dependant):
        call = current.call
        if getattr(call, "__code__", None) is _REQUIRE:
            cells = dict(zip(call.__code__.co_freevars, call.__closure__, strict=True))
            found = (found or frozenset()) | frozenset(cells["scopes"].cell_contents)
    return found


def routes_of(app: FastAPI) -> Iterator[Route]:
    """Every method and path the app answers, the schema's hidden ones too.

    A mounted app has no dependencies the matrix can read: it is a GET of its path, which must
    then be in OPEN.
    """
    for context in iter_route_contexts(app.routes):
        path = context.path or ""
        if isinstance(context.original_route, Mount):
            yield Route("GET", path, None, (), has_body=False)
            continue
        methods = set(context.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette answers HEAD for every GET: the same route
        dependant = getattr(context.original_route, "dependant", None)
        scopes = _required_scopes(dependant) if dependant is not None else None
        has_body = dependant is not None and any(d.body_params for d in _dependants(dependant))
        idempotent = dependant is not None and any(
            h.alias == "Idempotency-Key" for d in _dependants(dependant) for h in d.header_params
        )
        parameters = tuple(
            part.strip("{}").split(":")[0] for part in path.split("/") if part.startswith("{")
        )
        for method in sorted(methods):
            yield Route(method, path, scopes, parameters, has_body, idempotent)


def all_scopes(apps: list[FastAPI]) -> frozenset[str]:
    """Every scope a route or a workflow step asks for, and pii:read."""
    scopes = {PII_READ, *(t.scope for t in TRANSITIONS.values())}
    for app in apps:
        for route in routes_of(app):
            if route.scopes:
                scopes |= route.scopes
    return frozenset(scopes)


# -- the expectations ------------------------------------------------------------------------


def kind_of(route: Route) -> str:
    """owned (404 outside), list (nothing of 4113 outside), named (a write naming a 4113
    region or person: refused), unconfined (the same for everyone), report (a ledger import),
    async (accepted for a callback: nothing of 4113 in the acknowledgement)."""
    if route.key in KINDS:
        return KINDS[route.key][0]
    if RESOURCE_IDS & set(route.parameters):
        return "owned"
    return "list" if route.method == "GET" else "named"


def _text(response: httpx.Response) -> str:
    """What a person could read in the answer: JSON, text, or every cell of a workbook."""
    if "spreadsheetml" in response.headers.get("content-type", ""):
        book = load_workbook(io.BytesIO(response.content), read_only=True)
        cells = (
            str(value)
            for sheet in book.worksheets
            for row in sheet.iter_rows(values_only=True)
            for value in row
            if value is not None
        )
        return "\n".join(cells)
    return response.text


def _lists_empty(body: Any) -> bool:
    if isinstance(body, list):
        return not body
    if isinstance(body, dict):
        return all(_lists_empty(v) for v in body.values())
    return True


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    query: dict[str, str]
    json: Any
    files: Any
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return f"{self.url}?{self.query}{json.dumps(self.json, ensure_ascii=False)}"

    async def send(self, client: httpx.AsyncClient, token: str | None) -> httpx.Response:
        """The answer; an exception the app raised becomes a 500 naming it, so that the
        matrix goes on and reports every route."""
        headers = dict(self.headers)
        if token is not None:
            headers.update(bearer(token))
        try:
            return await client.request(
                self.method,
                self.url,
                params=self.query,
                json=self.json,
                files=self.files,
                headers=headers,
            )
        except Exception as exc:  # noqa: BLE001 - reported as the route's failure
            raised = f"raised {type(exc).__name__}: {exc}"
            return httpx.Response(500, json={"detail": raised})


PURPOSE = quote("路由矩阵: 区域隔离检查")  # a clear read needs its purpose


def build(route: Route, served: Served, call: Call | None) -> Request | str:
    """The request for `route`, or what the matrix lacks to make it."""
    call = call or served.calls.get(route.key) or Call()
    values = {**served.values, **call.path}
    missing = [p for p in route.parameters if p not in values]
    if missing:
        return (
            f"no value for path parameter(s) {', '.join(missing)}: seed a 4113 resource and "
            "add it to Served.values in tests/security/conftest.py"
        )
    if route.has_body and call.json is None and call.files is None:
        return (
            "no request body: add a valid body that targets the 4113 resource to "
            "Served.calls in tests/security/conftest.py"
        )
    url = route.path
    for name in route.parameters:
        url = url.replace("{" + name + "}", quote(values[name], safe=""))
    headers = {"Bangfu-Purpose": PURPOSE, **call.headers}
    return Request(route.method, url, dict(call.query), call.json, call.files, headers)


# -- running the matrix ----------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    route: str
    case: str
    got: str
    expected: str


@dataclass
class Tokens:
    owner: str
    owner_elsewhere: str  # the owner's client with a 4201 token
    intruder: str
    nowhere: str
    all_scopes: frozenset[str]
    make: Callable[..., str]

    def without(self, scopes: frozenset[str]) -> str:
        """A 4113 token of the owner with every scope but these."""
        rest = sorted(self.all_scopes - scopes)
        return self.make(*rest, regions=["4113"], client_id=OWNER_CLIENT)


def make_tokens(token: Callable[..., str], scopes: frozenset[str]) -> Tokens:
    return Tokens(
        owner=token(*sorted(scopes), regions=["4113"], client_id=OWNER_CLIENT),
        owner_elsewhere=token(*sorted(scopes), regions=["4201"], client_id=OWNER_CLIENT),
        intruder=token(*sorted(scopes), regions=["4201"], client_id=INTRUDER_CLIENT),
        nowhere=token(*sorted(scopes), regions=[], client_id="matrix-nowhere"),
        all_scopes=scopes,
        make=token,
    )


def _got(response: httpx.Response) -> str:
    detail = ""
    if response.headers.get("content-type", "").startswith(("application/json", "application/p")):
        body = response.json()
        if isinstance(body, dict) and "detail" in body:
            detail = f" ({body['detail']})"[:120]
    return f"{response.status_code}{detail}"


def _leaks(response: httpx.Response, markers: set[str], request: Request) -> list[str]:
    """The markers the answer shows that the caller did not send itself."""
    text = _text(response)
    return sorted(m for m in markers if m in text and m not in request.text)


def judge_outside(
    kind: str, response: httpx.Response, request: Request, markers: set[str]
) -> tuple[str, str] | None:
    """None when a caller outside 4113 got what it should; else (got, expected)."""
    leaks = _leaks(response, markers, request)
    if leaks:
        return f"{_got(response)} showing {', '.join(leaks)}", "nothing of the other region"
    status = response.status_code
    if kind == "owned":
        return None if status == 404 else (_got(response), "404")
    if kind == "list":
        return None if status in (200, 404) else (_got(response), "200 without 4113, or 404")
    if kind == "named":
        return None if status in (403, 404) else (_got(response), "403/404 refused")
    if kind == "report":
        if status in (403, 404):
            return None
        imported = response.json().get("summary", {}).get("imported") if status == 200 else None
        return None if imported == 0 else (_got(response), "nothing imported, or 403/404")
    if kind == "async":
        return None if 200 <= status < 300 else (_got(response), "2xx: an acknowledgement")
    # unconfined
    return None if 200 <= status < 300 else (_got(response), "2xx: not region data")


_ENDINGS = ("/revoke", "/cancel", "/steps/{step}")


def _order(route: Route) -> tuple[int, str]:
    """Reads first; deletions, revocations, cancellations and workflow steps last, so that
    the owner's writes spoil nothing the next route needs."""
    if route.method == "GET":
        return (0, route.path)
    if route.method == "DELETE" or route.path.endswith(_ENDINGS):
        return (2, route.path)
    return (1, route.path)


def judge_owner(
    route: Route, response: httpx.Response, request: Request, markers: set[str]
) -> tuple[str, str] | None:
    """None when the owner got what the others are refused; else (got, expected).

    A read must answer 2xx, a list with the seeded 4113 data in it (else an empty answer to
    the others proves nothing). A write runs after earlier writes changed the file, so a
    conflict (409, 412) is fine; refused (401, 403), not found (404) or invalid (422) means
    the matrix's request is wrong, and the others' refusal proved nothing.
    """
    status = response.status_code
    if route.method != "GET" and kind_of(route) != "list":
        if status in (401, 403, 404, 422) or status >= 500:
            return _got(response), "the owner's write accepted (2xx, or 409/412 after others)"
        return None
    if not 200 <= status < 300:
        return _got(response), "2xx for the owner"
    if kind_of(route) == "list" and not _leaks(response, markers, request):
        return (
            f"{status} without any seeded 4113 resource",
            "the owner's list shows the seeded 4113 data (else the others' empty answer "
            "proves nothing): seed it or change the query",
        )
    return None


GHOST = "01a00000-0000-7000-8000-000000000000"  # an id nothing has


def _ghost_of(route: Route, served: Served) -> Call:
    """The route's own call with every resource id in the path replaced by one nothing has."""
    call = served.calls.get(route.key) or Call()
    ghosts = {p: GHOST for p in route.parameters if p in RESOURCE_IDS}
    return replace(call, path={**call.path, **ghosts})


def _problem(response: httpx.Response, ids: list[str]) -> tuple[int, str, str]:
    """Status, problem type and detail, with the given ids written as the ghost id."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("detail", ""))
    for value in ids:
        detail = detail.replace(value, GHOST)
    return response.status_code, str(body.get("type", "")), detail


def judge_indistinguishable(
    response: httpx.Response, missing: httpx.Response, served: Served, route: Route
) -> tuple[str, str] | None:
    """None when the refusal of a 4113 id reads exactly as the answer for an id nobody has."""
    call = served.calls.get(route.key) or Call()
    values = {**served.values, **call.path}
    ids = [values[p] for p in route.parameters if p in RESOURCE_IDS]
    theirs, nobody = _problem(response, ids), _problem(missing, ids)
    if theirs == nobody:
        return None
    return (
        f"{theirs[0]} {theirs[1]} '{theirs[2]}'",
        f"the answer for an id that does not exist: {nobody[0]} {nobody[1]} '{nobody[2]}' "
        "(else the refusal says the 4113 resource exists)",
    )


VOLATILE = frozenset({"decision_id"})  # benefits writes a fresh receipt at every read


async def _snapshot(served: Served, token: str) -> dict[str, str]:
    """What the owner reads at each watched path: status and body (less its volatile keys)."""
    seen = {}
    for path in served.watched:
        response = await served.client.get(path, headers=bearer(token))
        body = response.json()
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in VOLATILE}
        seen[path] = f"{response.status_code} {json.dumps(body, ensure_ascii=False)}"
    return seen


async def run_matrix(
    served: Served, token: Callable[..., str], scopes: frozenset[str]
) -> tuple[list[Failure], int]:
    """Call every route of the app five ways (and as the owner); the failures and call count."""
    tokens = make_tokens(token, scopes)
    failures: list[Failure] = []
    calls = 0
    client = served.client
    found = sorted(routes_of(served.app), key=_order)
    walked = {r.key for r in found}
    documented = {
        (method.upper(), path)
        for path, operations in served.app.openapi()["paths"].items()
        for method in operations
    }
    for method, path in sorted(documented - walked):
        failures.append(
            Failure(
                f"{method} {path}",
                "-",
                "in the OpenAPI document but not found by walking the app",
                "routes_of() to find every route (has FastAPI's router changed?)",
            )
        )
    owner_calls: list[tuple[Route, Request]] = []
    before = await _snapshot(served, tokens.owner)
    for route in found:
        name = str(route)
        if route.key in OPEN:
            url = route.path.replace("{type_}", "x")
            response = await client.request(route.method, url)
            calls += 1
            # The ids only: the documents' examples name the county codes.
            ids = {m for m in served.owner_markers | served.intruder_markers if not m.isdigit()}
            leaks = sorted(m for m in ids if m in response.text)
            if response.status_code in (401, 403) or leaks:
                shown = f" showing {', '.join(leaks)}" if leaks else ""
                failures.append(
                    Failure(name, "open", f"{_got(response)}{shown}", "open, and nobody's data")
                )
            continue
        if route.scopes is None:
            failures.append(
                Failure(
                    name,
                    "-",
                    "no shared.auth.require dependency",
                    "a token checked by require(...), or an entry in OPEN with its reason",
                )
            )
            continue
        request = build(route, served, None)
        if isinstance(request, str):
            failures.append(Failure(name, "-", "not callable by the matrix", request))
            continue
        kind = kind_of(route)

        response = await request.send(client, None)
        calls += 1
        if response.status_code != 401:
            failures.append(Failure(name, "1 no token", _got(response), "401"))

        needed = route.scopes | SCOPE_IN_SERVICE.get(route.key, (frozenset(), ""))[0]
        if needed:
            response = await request.send(client, tokens.without(needed))
            calls += 1
            if response.status_code != 403:
                lacking = " ".join(sorted(needed))
                failures.append(Failure(name, "2 no scope", _got(response), f"403 ({lacking})"))
        elif route.key not in ANY_SCOPE:
            failures.append(
                Failure(
                    name,
                    "2 no scope",
                    "needs a token but no scope",
                    "require('<service>:<scope>'), or an entry in ANY_SCOPE with its reason",
                )
            )

        for case, caller, markers in (
            ("3 other region", tokens.intruder, served.owner_markers),
            ("3 same client", tokens.owner_elsewhere, served.owner_markers),
            ("4 no regions", tokens.nowhere, served.owner_markers | served.intruder_markers),
        ):
            response = await request.send(client, caller)
            calls += 1
            wrong = judge_outside(kind, response, request, markers)
            if not wrong and kind == "owned":
                ghost = build(route, served, _ghost_of(route, served))
                assert isinstance(ghost, Request)
                missing = await ghost.send(client, caller)
                calls += 1
                wrong = judge_indistinguishable(response, missing, served, route)
            if wrong:
                failures.append(Failure(name, case, *wrong))

        for foreign in served.foreign.get(route.key, []):
            variant = build(route, served, foreign.call)
            assert isinstance(variant, Request)
            response = await variant.send(client, tokens.intruder)
            calls += 1
            leaks = _leaks(response, served.owner_markers, variant)
            problems = [f"showing {', '.join(leaks)}"] if leaks else []
            if foreign.then:
                later = await foreign.then(client, response, tokens.intruder)
                problems += [later] if later else []
            empty = (
                foreign.empty_ok and response.status_code == 200 and _lists_empty(response.json())
            )
            if problems or not (response.status_code in foreign.expect or empty):
                expected = "/".join(map(str, sorted(foreign.expect)))
                failures.append(
                    Failure(
                        name,
                        "5 foreign ids",
                        " ".join([_got(response), *problems]),
                        f"{expected}{' or empty' if foreign.empty_ok else ''}: {foreign.why}",
                    )
                )
        owner_calls.append((route, request))

    after = await _snapshot(served, tokens.owner)
    for path in served.watched:
        if after[path] != before[path]:
            failures.append(
                Failure(
                    f"GET {path}",
                    "3-5 writes",
                    f"changed by the others' calls: {after[path][:200]}",
                    f"as before them: {before[path][:200]}",
                )
            )

    # The owner last, reads before writes: what the others were refused, the owner gets.
    for route, request in owner_calls:
        if route.idempotent:
            key = {"Idempotency-Key": f"matrix-{route.method}-{route.path}"}
            request = replace(request, headers={**request.headers, **key})
        response = await request.send(client, tokens.owner)
        calls += 1
        wrong = judge_owner(route, response, request, served.owner_markers)
        if wrong:
            failures.append(Failure(str(route), "owner", *wrong))
        elif route.idempotent and response.is_success:
            # The same client's 4201 token replaying the key gets neither the stored answer
            # nor the write: a replay must check the replaying token.
            replayed = await request.send(client, tokens.owner_elsewhere)
            calls += 1
            if replayed.is_success:
                failures.append(
                    Failure(
                        str(route),
                        "6 key replayed",
                        f"{_got(replayed)} to the owner's client with a 4201 token",
                        "refused: the Idempotency-Key's answer belongs to the 4113 token",
                    )
                )
    return failures, calls


def table(service: str, failures: list[Failure], calls: int) -> str:
    lines = [f"{service}: {len(failures)} failure(s) in {calls} calls"]
    width = max((len(f.route) for f in failures), default=10)
    for f in failures:
        lines.append(f"  {f.route:<{width}}  {f.case:<15} got {f.got}  — expected {f.expected}")
    return "\n".join(lines)


async def test_every_registry_route_is_confined_to_the_callers_regions(
    registry_served: Served, token: Callable[..., str]
) -> None:
    failures, calls = await run_matrix(registry_served, token, all_scopes([registry_served.app]))
    assert not failures, table("registry", failures, calls)


async def test_every_benefits_route_is_confined_to_the_callers_regions(
    benefits_served: Served, token: Callable[..., str]
) -> None:
    failures, calls = await run_matrix(benefits_served, token, all_scopes([benefits_served.app]))
    assert not failures, table("benefits", failures, calls)


async def test_every_notifications_route_is_confined_to_the_callers_regions(
    notifications_served: Served, token: Callable[..., str]
) -> None:
    failures, calls = await run_matrix(
        notifications_served, token, all_scopes([notifications_served.app])
    )
    assert not failures, table("notifications", failures, calls)


async def test_every_verification_route_is_confined_to_the_callers_regions(
    verification_served: Served, token: Callable[..., str]
) -> None:
    failures, calls = await run_matrix(
        verification_served, token, all_scopes([verification_served.app])
    )
    assert not failures, table("verification", failures, calls)


async def test_a_route_the_matrix_cannot_check_fails_saying_what_to_add() -> None:
    app = FastAPI()

    @app.get("/v1/widgets/{widget_id}", dependencies=[Depends(require("widgets:read"))])
    async def widget(widget_id: str) -> None: ...

    @app.post("/v1/widgets", dependencies=[Depends(require("widgets:write"))])
    async def add_widget(body: dict[str, str]) -> None: ...

    @app.get("/v1/gadgets", dependencies=[Depends(require())])
    async def gadgets() -> None: ...

    @app.get("/v1/forgotten")
    async def forgotten() -> None: ...

    app.mount("/files", FastAPI())
    async with running(app) as client:
        served = Served(app=app, client=client, values={})
        failures, _ = await run_matrix(served, lambda *_, **__: "not-a-token", frozenset())

    said = {(f.route, f.expected.split(":")[0].split(",")[0]) for f in failures}
    assert ("GET /v1/widgets/{widget_id}", "no value for path parameter(s) widget_id") in said
    assert ("POST /v1/widgets", "no request body") in said
    assert ("GET /v1/gadgets", "require('<service>") in said
    assert ("GET /v1/forgotten", "a token checked by require(...)") in said
    assert ("GET /files", "a token checked by require(...)") in said
