"""Verification broker (核对): consent, department adapters, reports."""
