"""The department sandbox: a separate process that answers as every department does."""
