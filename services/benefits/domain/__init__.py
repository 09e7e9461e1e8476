"""The benefits domain: plain Python, no framework imports."""
