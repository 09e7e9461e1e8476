// The clients file: every system and person the provider knows, with their scopes and regions.
//
// A client's or person's `regions` (GB/T 2260 prefixes) and `scopes` come from here and only
// from here: nothing a caller sends can widen them.

import { readFileSync } from 'node:fs';

const REGION = /^\d{2}(\d{2}){0,2}$/;
const SCOPE = /^[\x21\x23-\x5B\x5D-\x7E]+$/; // RFC 6749 §3.3 scope-token

function strings(value, what, pattern) {
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string' && pattern.test(item))) {
    throw new Error(`${what} must be a list of strings like ${pattern}`);
  }
  return value;
}

function checkClient(entry) {
  const id = entry.client_id;
  if (typeof id !== 'string' || !id) throw new Error('every client needs a client_id');
  const grantTypes = entry.grant_types ?? ['client_credentials'];
  const authMethod = entry.token_endpoint_auth_method ?? 'client_secret_basic';
  if (authMethod !== 'none' && (typeof entry.client_secret !== 'string' || entry.client_secret.length < 16)) {
    throw new Error(`client ${id}: a client_secret of at least 16 characters is required`);
  }
  if (grantTypes.includes('client_credentials') && authMethod === 'none') {
    throw new Error(`client ${id}: client credentials need a secret`);
  }
  return {
    clientId: id,
    scopes: strings(entry.scopes ?? [], `client ${id}: scopes`, SCOPE),
    regions: strings(entry.regions ?? [], `client ${id}: regions`, REGION),
    // The registration oidc-provider sees: no `scope`, the suite's scopes are checked here.
    metadata: {
      client_id: id,
      ...(authMethod === 'none' ? {} : { client_secret: entry.client_secret }),
      token_endpoint_auth_method: authMethod,
      grant_types: grantTypes,
      response_types: grantTypes.includes('authorization_code') ? ['code'] : [],
      redirect_uris: entry.redirect_uris ?? [],
      ...(entry.post_logout_redirect_uris ? { post_logout_redirect_uris: entry.post_logout_redirect_uris } : {}),
    },
  };
}

function checkPerson(entry) {
  const { username } = entry;
  if (typeof username !== 'string' || !username) throw new Error('every person needs a username');
  if (typeof entry.password !== 'string' || !entry.password) {
    throw new Error(`person ${username}: a password is required`);
  }
  return {
    username,
    password: entry.password,
    name: typeof entry.name === 'string' ? entry.name : username,
    scopes: strings(entry.scopes ?? [], `person ${username}: scopes`, SCOPE),
    regions: strings(entry.regions ?? [], `person ${username}: regions`, REGION),
  };
}

function byKey(items, key, what) {
  const map = new Map();
  for (const item of items) {
    if (map.has(item[key])) throw new Error(`${what} ${item[key]} is declared twice`);
    map.set(item[key], item);
  }
  return map;
}

export function readRegistrations(path) {
  let document;
  try {
    document = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new Error(`${path}: ${error.message}`);
  }
  try {
    return {
      clients: byKey((document.clients ?? []).map(checkClient), 'clientId', 'client'),
      people: byKey((document.people ?? []).map(checkPerson), 'username', 'person'),
    };
  } catch (error) {
    throw new Error(`${path}: ${error.message}`);
  }
}
