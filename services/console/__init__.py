"""The county console: the web UI of the people who review, visit and decide (issue 16)."""
