"""Message templates in Chinese, one file per template and channel: `<template>.<channel>.j2`.

`StrictUndefined` makes a missing variable an error; the test suite renders every template for
every occurrence that uses it, so such an error is found there, not when a message goes out.
An email template's first line is its subject. Contexts carry only masked values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from services.notifications.domain.rules import yuan

TEMPLATE_DIR = Path(__file__).parent / "templates"


class Templates:
    """The template files of one directory, rendered strictly."""

    def __init__(self, directory: Path = TEMPLATE_DIR):
        self._env = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=False,  # plain text: SMS, inbox and email bodies, never HTML
            keep_trailing_newline=False,
        )
        self._env.filters["yuan"] = yuan  # integer 分 shown as yuan: `63000 | yuan` -> 630.00

    def names(self) -> set[tuple[str, str]]:
        """Every (template, channel) pair there is a file for."""
        return {
            tuple(name.removesuffix(".j2").rsplit(".", 1))  # type: ignore[misc]
            for name in self._env.list_templates(extensions=["j2"])
        }

    def render(
        self, template: str, channel: str, context: Mapping[str, Any]
    ) -> tuple[str | None, str]:
        """(subject, body); only email has a subject."""
        text = self._env.get_template(f"{template}.{channel}.j2").render(**context).strip()
        if channel == "email":
            subject, _, body = text.partition("\n")
            return subject.strip(), body.strip()
        return None, text
