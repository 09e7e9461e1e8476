"""The four Bangfu services; none imports another."""
