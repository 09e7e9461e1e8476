"""NATS users and their permissions, as blocks of nats-server configuration.

Each service may publish only its own subjects (`bangfu.<service>.>`) plus what its plumbing
needs (the JetStream API and acks, its dead letters); an integrator (对接单位, a department
system that reads events) may subscribe only to its regions' subjects, receives replies on an
inbox prefix of its own (a shared `_INBOX.>` would let it read other clients' replies), and may
replay through one durable consumer per region, named after it, whose filter the server checks.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from shared.events.envelope import region_filter
from shared.events.streams import DEAD_LETTER_PREFIX
from shared.migrations import SERVICES

# The events integrators may read, by stream: the registry's household events.
INTEGRATOR_EVENTS = {"REGISTRY": "bangfu.registry.household.*"}
# What a service needs besides its own subjects: the departments it queries.
EXTRA_PUBLISH = {"verification": ["bangfu.dept.*.query"]}
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,39}$")


@dataclass(frozen=True)
class User:
    """One user of the server configuration; `password` may be a `$VARIABLE` reference."""

    name: str
    password: str
    publish: list[str]
    subscribe: list[str]
    allow_responses: bool = False
    comment: str = ""

    def block(self) -> str:
        """The user as a nats-server configuration block (JSON is valid configuration)."""
        permissions: dict[str, Any] = {
            "publish": {"allow": self.publish},
            "subscribe": {"allow": self.subscribe},
        }
        if self.allow_responses:
            permissions["allow_responses"] = True
        body = json.dumps(
            {"user": self.name, "password": self.password, "permissions": permissions}, indent=2
        )
        if self.password.startswith("$"):  # a reference to nats-server's environment: unquoted
            body = body.replace(json.dumps(self.password), self.password, 1)
        comment = "".join(f"# {line}\n" for line in self.comment.splitlines())
        return comment + body


def password_variable(user: str) -> str:
    """The variable of nats-server's environment holding a suite process's password."""
    return f"$BANGFU_NATS_{user.upper()}_PASSWORD"


def service_user(service: str) -> User:
    return User(
        name=service,
        password=password_variable(service),
        publish=[
            f"bangfu.{service}.>",
            *EXTRA_PUBLISH.get(service, []),
            f"{DEAD_LETTER_PREFIX}.>",
            "$JS.API.>",
            "$JS.ACK.>",
        ],
        subscribe=["_INBOX.>"],
        comment=f"{service}: publishes its own events, reads through JetStream consumers",
    )


def suite_users() -> list[User]:
    """The suite's own processes: the four services, the department sandbox, and ops."""
    return [
        *(service_user(service) for service in SERVICES),
        User(
            name="sandbox",
            password=password_variable("sandbox"),
            publish=["bangfu.dept.>"],
            subscribe=["bangfu.dept.*.query"],
            allow_responses=True,
            comment="sandbox: answers department queries, publishes change feeds (not production)",
        ),
        User(
            name="ops",
            password=password_variable("ops"),
            publish=[">"],
            subscribe=[">"],
            comment="ops: `bangfu streams`, `bangfu dlq`, `bangfu events tail`",
        ),
    ]


def integrator_user(name: str, regions: list[str], password: str | None = None) -> User:
    """An integrator that may read only `regions` (2-, 4- or 6-digit GB/T 2260 prefixes)."""
    if not _NAME.match(name):
        raise ValueError(
            f"integrator name {name!r}: 2-40 lower-case letters, digits or '-', a letter first"
        )
    if not regions:
        raise ValueError("give at least one region prefix, e.g. --regions 4113")
    publish, subscribe = [], [f"{inbox_prefix(name)}.>"]
    for region in regions:
        tokens = region_filter(region)
        for stream, family in INTEGRATOR_EVENTS.items():
            filter_subject = f"{family}.{tokens}"
            consumer = consumer_name(name, region)
            subscribe.append(filter_subject)
            publish += [
                f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{filter_subject}",
                f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                f"$JS.ACK.{stream}.{consumer}.>",
            ]
    return User(
        name=name,
        password=password or secrets.token_urlsafe(24),
        publish=publish,
        subscribe=subscribe,
        comment=f"integrator {name}: regions {', '.join(regions)}",
    )


def inbox_prefix(name: str) -> str:
    return f"_INBOX_{name}"


def consumer_name(integrator: str, region: str) -> str:
    """The one durable consumer an integrator may create for a region's replay."""
    return f"{integrator}-{region}"


def authorization(users: list[User]) -> str:
    """An `authorization` block listing `users`; a server with one refuses anonymous clients."""
    blocks = "\n".join(user.block() for user in users)
    indented = "\n".join(f"    {line}" if line else "" for line in blocks.splitlines())
    return f"authorization {{\n  users: [\n{indented}\n  ]\n}}\n"


def integrator_instructions(user: User, regions: list[str], server_url: str) -> str:
    """What the integrator is sent: how to connect, what it may read, how to replay."""
    scheme, _, host = server_url.partition("://")
    lines = [
        f"url:          {scheme}://{user.name}:{user.password}@{host}",
        f"inbox prefix: {inbox_prefix(user.name)}   (nats.connect(..., inbox_prefix=...))",
        "subscribe:    " + ", ".join(s for s in user.subscribe if not s.startswith("_INBOX")),
        "replay:       a durable pull consumer per region on stream "
        + ", ".join(INTEGRATOR_EVENTS)
        + " (set both name and durable_name):",
        *(
            f"              {consumer_name(user.name, region)}  "
            f"filter {family}.{region_filter(region)}"
            for region in regions
            for family in INTEGRATOR_EVENTS.values()
        ),
    ]
    return "\n".join(lines)
