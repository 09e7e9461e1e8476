"""NATS users and their permissions, as blocks of nats-server configuration.

Each service may publish only its own subjects (`bangfu.<service>.>`) plus what its plumbing
needs (the JetStream API and acks, its dead letters); an integrator (对接单位, a department
system that reads events) may subscribe only to its regions' subjects, receives replies on an
inbox prefix of its own (a shared `_INBOX.>` would let it read other clients' replies), and may
replay through one durable consumer per region, named after it, whose filter the server checks.
"""

from __future__ import annotations

import importlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from shared.events.consumer import Subscription
from shared.events.envelope import region_filter
from shared.events.streams import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM
from shared.migrations import SERVICES

# The events integrators may read, by stream: the registry's household events.
INTEGRATOR_EVENTS = {"REGISTRY": "bangfu.registry.household.*"}
# What a service needs besides its own subjects: the departments it queries.
EXTRA_PUBLISH = {"verification": ["bangfu.dept.*.query", "bangfu.dept.*.queries"]}
# Streams a service reads through short-lived consumers: notifications' event history for
# webhook replays (services/notifications/history.py), over every service's stream.
EPHEMERAL_READS = {"notifications": [service.upper() for service in SERVICES]}
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


def durable_consumers(service: str) -> list[Subscription]:
    """The durable consumers a service runs, as its own code declares them."""
    from bangfu.embedded import SETTINGS

    settings = SETTINGS[service].for_migration()  # names only: no keys needed
    module = importlib.import_module(f"services.{service}.consumers")
    if service == "benefits":  # its handlers close over the parameter book
        from services.benefits.domain.parameters import load_book
        from services.benefits.service import Engine

        engine = Engine(load_book(settings.parameters_dir))  # type: ignore[attr-defined]
        found: list[Subscription] = module.subscriptions(settings, engine)
    else:
        found = module.subscriptions(settings)
    if service == "verification":  # the department feed's consumer is started by its app
        found.append(module.department_feed(settings))
    return found


def service_user(service: str) -> User:
    """A service's user: its own subjects, and of the JetStream API only what it runs on.

    Streams it publishes to or reads from may be created, updated and inspected (a service
    provisions a producer's stream if it starts first), never deleted, purged or read by
    sequence; consumers only under its own durable names; dead letters only of those.
    """
    consumers = durable_consumers(service)
    streams = sorted(
        {service.upper(), DEAD_LETTER_STREAM, *(consumer.stream for consumer in consumers)}
    )
    api = "$JS.API"
    publish = [f"bangfu.{service}.>", *EXTRA_PUBLISH.get(service, [])]
    for stream in streams:
        publish += [f"{api}.STREAM.{action}.{stream}" for action in ("CREATE", "UPDATE", "INFO")]
    for consumer in consumers:
        at = f"{consumer.stream}.{consumer.name}"
        publish += [
            f"{api}.CONSUMER.DURABLE.CREATE.{at}",
            f"{api}.CONSUMER.CREATE.{at}",
            f"{api}.CONSUMER.CREATE.{at}.>",
            f"{api}.CONSUMER.INFO.{at}",
            f"{api}.CONSUMER.MSG.NEXT.{at}",
            f"$JS.ACK.{at}.>",
            f"{DEAD_LETTER_PREFIX}.{consumer.name}",
        ]
    for stream in EPHEMERAL_READS.get(service, ()):
        # Short-lived consumers whose names the client library draws at random: a name
        # cannot be confined by prefix in NATS subjects, so any name on these streams.
        publish += [
            f"{api}.CONSUMER.CREATE.{stream}.*.bangfu.{stream.lower()}.>",
            f"{api}.CONSUMER.INFO.{stream}.*",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
            f"$JS.ACK.{stream}.*.>",
        ]
    return User(
        name=service,
        password=password_variable(service),
        publish=list(dict.fromkeys(publish)),
        subscribe=["_INBOX.>"],
        comment=f"{service}: publishes its own events, reads through its own JetStream consumers",
    )


def suite_users() -> list[User]:
    """The suite's own processes: the four services, the department sandbox, and ops."""
    return [
        *(service_user(service) for service in SERVICES),
        User(
            name="sandbox",
            password=password_variable("sandbox"),
            publish=["bangfu.dept.>"],
            subscribe=["bangfu.dept.*.query", "bangfu.dept.*.queries"],
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
