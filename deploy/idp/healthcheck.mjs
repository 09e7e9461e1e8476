// Liveness of the provider for a container's HEALTHCHECK: exit 0 iff its discovery document
// answers on BANGFU_IDP_PORT. A file rather than an inline `node -e` so that every engine runs
// the same argv (podman-compose 1.0 re-quotes an inline script into a broken shell command).
const port = process.env.BANGFU_IDP_PORT ?? '8180';
// A server that accepts but never answers is as dead as one that refuses: give up within the
// HEALTHCHECK's 3 s timeout.
fetch(`http://127.0.0.1:${port}/.well-known/openid-configuration`, {
  signal: AbortSignal.timeout(2500),
}).then(
  (response) => process.exit(response.ok ? 0 : 1),
  () => process.exit(1),
);
