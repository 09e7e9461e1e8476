// Bangfu's OpenID provider (oidc-provider): `node server.mjs` serves it,
// `node server.mjs rotate` adds a new signing key first, `node server.mjs retire` drops the old ones.
//
// SIGHUP reloads the keys file and the clients file without a restart (a new provider replaces
// the old one; sessions and grants live in the in-memory store they share). A file that does not
// load is logged and the running configuration kept.

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadOrCreateKeys, retire, rotate } from './keys.mjs';
import { handleInteraction } from './login.mjs';
import { createProvider } from './provider.mjs';
import { readRegistrations } from './registrations.mjs';

const env = process.env;
const host = env.BANGFU_IDP_HOST || '127.0.0.1';
const port = Number(env.BANGFU_IDP_PORT || 8180);
const settings = {
  issuer: env.BANGFU_IDP_ISSUER || `http://127.0.0.1:${port}`,
  audience: env.BANGFU_IDP_AUDIENCE || 'bangfu',
  accessTokenTtl: Number(env.BANGFU_IDP_ACCESS_TOKEN_TTL || 600),
  clientsFile: resolve(env.BANGFU_IDP_CLIENTS || fileURLToPath(new URL('./clients.json', import.meta.url))),
  keysFile: resolve(env.BANGFU_IDP_KEYS || '.bangfu/idp-keys.json'),
  // Behind a TLS-terminating proxy (Kubernetes' Ingress): take the scheme and host of the
  // endpoints in discovery, and Secure cookies, from its X-Forwarded-Proto and -Host. Only there:
  // a client reaching the provider directly could set those headers itself.
  proxy: env.BANGFU_IDP_PROXY === 'true',
};

const log = (message) => console.log(`${new Date().toISOString()} bangfu-idp ${message}`);

function kids(keys) {
  return keys.map((key) => key.kid).join(', ');
}

function build(cookieKeys) {
  const keys = loadOrCreateKeys(settings.keysFile);
  const registrations = readRegistrations(settings.clientsFile);
  const provider = createProvider({ ...settings, keys, registrations, cookieKeys });
  provider.proxy = settings.proxy;
  provider.on('server_error', (_ctx, error) => log(`server error: ${error.stack}`));
  // The detail says why (a wrong secret, a grant type the client may not use); never a secret.
  provider.on('grant.error', (ctx, error) => log(
    `token refused: client=${ctx.oidc.client?.clientId ?? ctx.oidc.params?.client_id ?? '?'} `
    + `${error.error}: ${error.error_detail ?? error.error_description}`,
  ));
  provider.on('grant.success', (ctx) => log(
    `token issued: client=${ctx.oidc.client.clientId} grant=${ctx.oidc.params.grant_type}`,
  ));
  return {
    provider,
    people: registrations.people,
    callback: provider.callback(),
    summary: `signing kid ${keys[0].kid}; published ${kids(keys)}; `
      + `${registrations.clients.size} clients, ${registrations.people.size} people`,
  };
}

function serve() {
  // Cookie keys live as long as the process: a reload keeps sign-ins in progress valid.
  const cookieKeys = [randomBytes(32).toString('base64url')];
  let current = build(cookieKeys);

  const server = createServer((req, res) => {
    const { pathname } = new URL(req.url, settings.issuer);
    if (pathname.startsWith('/interaction/')) {
      handleInteraction(current.provider, current.people, req, res, pathname).catch((error) => {
        log(`interaction failed: ${error.stack}`);
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
      return;
    }
    current.callback(req, res);
  });

  process.on('SIGHUP', () => {
    try {
      current = build(cookieKeys);
      log(`reloaded: ${current.summary}`);
    } catch (error) {
      log(`reload failed, keeping the running configuration: ${error.message}`);
    }
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  server.listen(port, host, () => {
    log(`issuer ${settings.issuer} listening on http://${host}:${port}; ${current.summary}`);
  });
}

const [command] = process.argv.slice(2);
try {
  switch (command) {
    case undefined:
      serve();
      break;
    case 'rotate':
      console.log(`signing with ${kids(rotate(settings.keysFile).slice(0, 1))}; `
        + 'old keys stay published: send the provider SIGHUP (or restart it), '
        + 'then `retire` once their tokens have expired');
      break;
    case 'retire':
      console.log(`kept only ${kids(retire(settings.keysFile))}: send the provider SIGHUP (or restart it)`);
      break;
    default:
      console.error('usage: node server.mjs [rotate | retire]');
      process.exit(2);
  }
} catch (error) {
  console.error(`bangfu-idp: ${error.message}`);
  process.exit(1);
}
