"""The verification domain: plain Python, no framework imports."""
