// The oidc-provider configuration: JWT access tokens for one resource server (the suite), the
// suite's scopes and regions from the clients file, client credentials and authorization code
// with PKCE.

import Provider, { errors } from 'oidc-provider';
// The package's own client-credentials handler, wrapped below so that a request without `scope`
// gets the client's registered scopes (oidc-provider would give none).
import {
  handler as clientCredentialsHandler,
  parameters as clientCredentialsParameters,
} from 'oidc-provider/lib/actions/grants/client_credentials.js';
import * as grantHelpers from 'oidc-provider/lib/helpers/grants.js';

import { ALG } from './keys.mjs';

// The suite's APIs as one resource server: the indicator a client may send as `resource`.
export const RESOURCE = 'urn:bangfu:api';

// The only scopes oidc-provider itself knows. The suite's scopes are deliberately not among them:
// oidc-provider refuses a known scope a client was not registered with, but passes unknown ones
// on to the resource server, which keeps only the registered ones (so an unknown scope, or one
// the client does not have, is dropped and never widens anything).
const OIDC_SCOPES = ['openid', 'offline_access'];

export function createProvider({ issuer, audience, accessTokenTtl, keys, registrations, cookieKeys }) {
  const { clients, people } = registrations;

  // The scopes a token for `client` may carry at most: its registration's.
  const resourceServerInfo = (client) => ({
    scope: (clients.get(client.clientId)?.scopes ?? []).join(' '),
    audience,
    accessTokenTTL: accessTokenTtl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: ALG, kid: keys[0].kid } },
  });

  const provider = new Provider(issuer, {
    clients: [...clients.values()].map((client) => client.metadata),
    jwks: { keys },
    cookies: { keys: cookieKeys },
    clientDefaults: { id_token_signed_response_alg: ALG },
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'none'],
    responseTypes: ['code'],
    scopes: OIDC_SCOPES,
    claims: { openid: ['sub'], profile: ['name'] },
    pkce: { required: () => true },
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      // A working day: the console's refresh token, its grant and the sign-in last as long.
      Grant: 8 * 3600,
      Session: 8 * 3600,
      RefreshToken: 8 * 3600,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        // A code's or refresh token's access token is for the suite's APIs even when `openid`
        // was asked (oidc-provider would otherwise issue an opaque token for its userinfo).
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator, client) => {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget();
          return resourceServerInfo(client);
        },
      },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },

    // `regions` of a system comes from its client registration, of a person from theirs.
    extraTokenClaims: async (_ctx, token) => {
      const owner = token.accountId ? people.get(token.accountId) : clients.get(token.clientId);
      return { regions: owner?.regions ?? [] };
    },

    findAccount: async (_ctx, username) => {
      const person = people.get(username);
      if (!person) return undefined;
      return { accountId: username, claims: async () => ({ sub: username, name: person.name }) };
    },

    // Every client in the file is the suite's own (first party): no consent page. The person
    // gets what the console asked for, cut to their registered scopes; the rest is recorded as
    // refused so that oidc-provider does not ask again.
    loadExistingGrant: async (ctx) => {
      const { accountId } = ctx.oidc.session;
      const person = people.get(accountId);
      if (!person) return undefined;
      const grant = new ctx.oidc.provider.Grant({ accountId, clientId: ctx.oidc.client.clientId });
      const requested = [...ctx.oidc.requestParamScopes];
      const oidc = requested.filter((scope) => OIDC_SCOPES.includes(scope));
      if (oidc.length) grant.addOIDCScope(oidc.join(' '));
      const api = requested.filter((scope) => !OIDC_SCOPES.includes(scope));
      const allowed = new Set(person.scopes);
      const granted = api.filter((scope) => allowed.has(scope));
      const refused = api.filter((scope) => !allowed.has(scope));
      if (granted.length) grant.addResourceScope(RESOURCE, granted.join(' '));
      if (refused.length) grant.rejectResourceScope(RESOURCE, refused.join(' '));
      grant.addOIDCClaims(['name']);
      await grant.save();
      return grant;
    },
  });

  const helpers = Object.fromEntries(
    Object.entries(grantHelpers).map(([name, helper]) => [name, helper.bind(undefined, provider)]),
  );
  provider.registerGrantType(
    'client_credentials',
    async (ctx) => {
      if (ctx.oidc.params.scope === undefined) {
        ctx.oidc.params.scope = clients.get(ctx.oidc.client.clientId)?.scopes.join(' ') || undefined;
      }
      return clientCredentialsHandler(provider, helpers, ctx);
    },
    new Set([...clientCredentialsParameters, 'resource']),
    new Set(['resource']),
  );

  return provider;
}
