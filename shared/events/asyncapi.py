"""An AsyncAPI 3.0 document of a service's events, generated from their definitions.

One channel per event type (its NATS subject, the region as three parameters), one `send`
operation per channel, and each message's payload the CloudEvent envelope whose `data` is the
event's own schema: the same definitions `GET /v1/events/schemas` serves.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from shared.events.envelope import CONTENT_TYPE, SCHEMA_BASE, CloudEvent, event_type

ASYNCAPI_VERSION = "3.0.0"
REF = "#/components/schemas/{model}"
REGION_PARAMETERS = {
    "province": ("省: the region code's first two digits", "41"),
    "city": ("市: its middle two digits", "13"),
    "county": ("县/区: its last two digits", "02"),
}


def _pascal(*tokens: str) -> str:
    words = [word for token in tokens for word in token.replace(".", "_").split("_")]
    return "".join(word.capitalize() for word in words)


def _summary(cls: type[Any]) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def _common_components() -> dict[str, Any]:
    envelope = CloudEvent.model_json_schema(mode="serialization", ref_template=REF)
    schemas: dict[str, Any] = envelope.pop("$defs", {})
    schemas["CloudEvent"] = envelope
    schemas["NatsHeaders"] = {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "The event id: JetStream drops a repeat within its duplicate window",
            },
            "traceparent": {
                "type": "string",
                "description": "W3C trace context of the publishing span",
                "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            },
            "Content-Type": {"type": "string", "const": CONTENT_TYPE},
        },
        "required": ["Nats-Msg-Id", "Content-Type"],
    }
    return {
        "schemas": schemas,
        "parameters": {
            name: {"description": description, "examples": [example]}
            for name, (description, example) in REGION_PARAMETERS.items()
        },
        "securitySchemes": {
            "userPassword": {
                "type": "userPassword",
                "description": "A NATS user per client; see `bangfu nats-user`",
            }
        },
    }


def asyncapi_document(
    service: str, default_aggregate: str, event_classes: Sequence[type[Any]]
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the events `service` publishes (about `default_aggregate`
    unless an event class names its own `aggregate`)."""
    components = _common_components()
    schemas, messages = components["schemas"], {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    region = ".".join(f"{{{name}}}" for name in REGION_PARAMETERS)
    for cls in event_classes:
        aggregate = getattr(cls, "aggregate", default_aggregate)  # a class may name its own
        type_ = event_type(service, aggregate, cls.name)
        message = _pascal(aggregate, cls.name)
        data = TypeAdapter(cls).json_schema(mode="serialization", ref_template=REF)
        schemas.update(data.pop("$defs", {}))
        schemas[f"{message}Data"] = data
        messages[message] = {
            "name": type_,
            "title": type_,
            "summary": _summary(cls),
            "contentType": CONTENT_TYPE,
            "headers": {"$ref": "#/components/schemas/NatsHeaders"},
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": type_},
                            "dataschema": {"const": f"{SCHEMA_BASE}/{type_}.json"},
                            "data": {"$ref": f"#/components/schemas/{message}Data"},
                        },
                    },
                ]
            },
        }
        channel = message[0].lower() + message[1:]
        channels[channel] = {
            "address": f"bangfu.{service}.{aggregate}.{cls.name}.{region}",
            "title": type_,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
            "parameters": {
                name: {"$ref": f"#/components/parameters/{name}"} for name in REGION_PARAMETERS
            },
        }
        operations[f"publish{message}"] = {
            "action": "send",
            "summary": f"{service} publishes {type_}",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
        }
    components["messages"] = messages
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": f"urn:bangfu:{service}:events",
        "info": {
            "title": f"Bangfu {service} events",
            "version": "1.0.0",
            "description": (
                f"CloudEvents the {service} service publishes on NATS JetStream (stream "
                f"{service.upper()}), one subject per event type and region. Integrators "
                "subscribe to their regions' subjects only; see `bangfu nats-user`."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "production": {
                "host": "nats.example.gov.cn:4222",
                "protocol": "nats",
                "description": "TLS required; anonymous clients are refused",
                "security": [{"$ref": "#/components/securitySchemes/userPassword"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": components,
    }
