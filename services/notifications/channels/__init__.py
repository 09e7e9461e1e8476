"""Channels that leave the suite: an HTTP SMS gateway and SMTP email."""
