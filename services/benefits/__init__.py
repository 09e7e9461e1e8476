"""Benefits: rules as code, entitlements, 脱困 evaluation, what-if."""
