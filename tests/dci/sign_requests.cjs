// Preloaded into the conformance suite's Node process (NODE_OPTIONS=--require): the suite
// cannot sign (its "valid signature mode" is future work), so this signs each DCI envelope
// it sends with the placeholder signature, the way a real SPMIS client would: ed25519 in the
// HTTP-signature style of services/registry/dci/signing.py, with the test key whose public
// half the registry has registered for the suite's sender_id. Envelopes the suite breaks on
// purpose (another signature, no message) go as they are, so the registry still sees them.
'use strict';
const crypto = require('node:crypto');
const path = require('node:path');

const Spec = require(path.join(process.cwd(), 'node_modules', 'pactum', 'src', 'models', 'Spec.js'));
const key = crypto.createPrivateKey(process.env.DCI_TEST_SIGNING_KEY_PEM);
const placeholder = process.env.DCI_SIGNATURE || 'unsigned-stub';

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function sign(header, message) {
  const created = Math.floor(Date.now() / 1000);
  const expires = created + 300;
  const body = Buffer.from(canonical({ header, message }), 'utf8');
  const digest = crypto.createHash('blake2b512').update(body).digest('base64');
  const signingString = `(created): ${created}\n(expires): ${expires}\ndigest: BLAKE-512=${digest}`;
  const signature = crypto.sign(null, Buffer.from(signingString, 'utf8'), key).toString('base64');
  return `keyId="${header.sender_id}|conformance|ed25519",algorithm="ed25519",created="${created}",` +
    `expires="${expires}",headers="(created) (expires) digest",signature="${signature}"`;
}

const withJson = Spec.prototype.withJson;
Spec.prototype.withJson = function signedJson(json) {
  if (json && typeof json === 'object' && json.signature === placeholder && json.header && json.message) {
    return withJson.call(this, { ...json, signature: sign(json.header, json.message) });
  }
  return withJson.call(this, json);
};
