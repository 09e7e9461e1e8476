"""`python -m bangfu`: the same as the `bangfu` command."""

from bangfu.cli import app

app()
