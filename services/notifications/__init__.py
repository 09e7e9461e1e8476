"""Notifications: the follow-up engine."""
