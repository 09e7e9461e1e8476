// The provider's private signing keys: a JWKS file, the first key signs, every key is published.
//
// Rotation in two steps, so that tokens already issued stay valid until they expire:
// `rotate` puts a new key first (new tokens carry its kid, the old key is still in the JWKS),
// and `retire`, once the old tokens have expired and the services' JWKS caches have refreshed,
// drops every key but the first.

import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

const ALG = 'ES256';

// RFC 7638 thumbprint of an EC public key: a kid that names the key and nothing else.
function thumbprint({ crv, kty, x, y }) {
  return createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url');
}

export function generateKey() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: thumbprint(jwk), alg: ALG, use: 'sig' };
}

export function readKeys(path) {
  const { keys } = JSON.parse(readFileSync(path, 'utf8'));
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new Error(`${path}: expected {"keys": [...]} with at least one key`);
  }
  for (const key of keys) {
    if (key.kty !== 'EC' || key.crv !== 'P-256' || !key.d || !key.kid) {
      throw new Error(`${path}: every key must be a private P-256 EC JWK with a kid (ES256)`);
    }
  }
  return keys;
}

// Written beside and renamed over, so that a provider reloading on SIGHUP never reads half a file.
export function writeKeys(path, keys) {
  mkdirSync(dirname(path), { recursive: true });
  const partial = `${path}.${process.pid}.tmp`;
  writeFileSync(partial, `${JSON.stringify({ keys }, null, 2)}\n`, { mode: 0o600 });
  renameSync(partial, path);
}

export function loadOrCreateKeys(path) {
  try {
    return readKeys(path);
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  const keys = [generateKey()];
  writeKeys(path, keys);
  return keys;
}

export function rotate(path) {
  const keys = [generateKey(), ...loadOrCreateKeys(path)];
  writeKeys(path, keys);
  return keys;
}

export function retire(path) {
  const [signing] = readKeys(path);
  writeKeys(path, [signing]);
  return [signing];
}

export { ALG };
