"""The event backbone: CloudEvents envelope, transactional outbox, streams and consumers."""
