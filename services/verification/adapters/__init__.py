"""Department adapters: a transport (HTTP or NATS request-reply) and a mapper per department."""
