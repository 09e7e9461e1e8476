"""The `bangfu` command: the embedded default, migrations, tokens and event tailing."""
