// A real OAuth 2 authorization server for the integration tests, laid out like a Keycloak realm.
//
//   node tests/node/auth-server.mjs --port P --resource <MCP URL> [--resource <other URL> ...]
//                                   [--dcr-scope "mcp:tools mcp:admin ..."]
//
// prints `READY <issuer>` on stdout once it listens on 127.0.0.1:P. Issuer
// http://127.0.0.1:P/realms/demo; oidc-provider 9 is mounted under /realms/demo and its routes
// renamed to Keycloak's (token, token/introspect, certs, auth, clients-registrations/openid-connect).
//
// Behaviour the tests rely on:
// - resource indicators (RFC 8707): each --resource is a resource server with scopes
//   `mcp:tools mcp:admin mcp:read`, aud = the resource, TTL 300 s; anything else -> invalid_target;
//   no `resource` parameter -> the first --resource.
// - token format per client: JWT (`typ: at+jwt`, RS256) for clients whose metadata has
//   `token_format: 'jwt'`, opaque otherwise (oidc-provider refuses to introspect JWTs).
// - a client_credentials request without `scope` gets the client's registered `scope` (like
//   Keycloak's default client scopes); a scope the client is not registered for -> invalid_scope.
// - every access token carries `realm_access.roles` (client metadata `realm_roles` for service
//   accounts, ['user'] for users), `preferred_username`, `email` (`<sub>@example.com`), `azp`.
// - introspection only for the confidential `mcp-gateway` (client_secret_basic or _post).
// - open dynamic client registration; devInteractions (any login name) for headless auth code + PKCE.
//   A registered client may only ask for the scopes it registered (oidc-provider, like a Keycloak
//   realm without an Allowed Client Scopes policy), so a client that registered with the first 401's
//   scope cannot step up. With --dcr-scope, like Keycloak's Allowed Client Scopes policy, every
//   dynamically registered client is registered for those scopes too (added to what it asked for).
// - RFC 8693 token exchange (grant `urn:ietf:params:oauth:grant-type:token-exchange`, registered
//   with registerGrantType) for clients that list the grant (`mcp-exchanger`): subject_token (and
//   actor_token) must be an active access token this realm issued (opaque or JWT, token type
//   access_token or jwt); audience (--audience names, default `upstream-api`, or a --resource) and/or
//   resource (a --resource), one in all; scope within the client's registered scope (none sent: all
//   of it). The new token keeps the subject's `sub`, adds `act: {sub: <actor>}` when an actor token
//   is given (nested when the subject token already had one), `azp` = the exchanging client, and
//   lives the client's `access_token_ttl` (default 300 s). Refusals: invalid_request (bad, unknown
//   or expired subject/actor token, unsupported token types), invalid_target, invalid_scope.
// - client metadata `access_token_ttl` (seconds) sets the lifetime of a client's tokens.
// - outside the realm: GET /__test/health, POST /__test/rotate (new RSA signing key with a new
//   kid becomes the active one; older keys stay in the JWKS); GET /__test/counters (token
//   requests seen, by grant type and by `grant_type client_id`); POST /__test/fault with
//   {client_id, mode: slow|status|garbage|reset|none, delay_ms, status} makes the token endpoint
//   misbehave for that client only (slow: answer after delay_ms; status: that HTTP status with
//   temporarily_unavailable; garbage: 200 text/html; reset: drop the connection).
// Only 127.0.0.1 is used; there are no outbound requests.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import { errors, Provider } from 'oidc-provider';

const REALM_PATH = '/realms/demo';
const MCP_SCOPES = ['mcp:tools', 'mcp:admin', 'mcp:read'];
const API_SCOPES = ['api:read', 'api:write']; // scopes of the upstream API, for exchanged tokens
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TOKEN_TYPES = {
  access_token: 'urn:ietf:params:oauth:token-type:access_token',
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
};
const TOKEN_TTL = 300;
const INTROSPECTORS = new Set(['mcp-gateway']);
const USER_ROLES = ['user'];

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    resource: { type: 'string', multiple: true },
    audience: { type: 'string', multiple: true },
    'dcr-scope': { type: 'string' },
  },
  strict: true,
});

const port = Number.parseInt(args.port ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node auth-server.mjs --port P --resource <URL> [--resource <URL> ...]');
  process.exit(2);
}
const resources = args.resource ?? [];
if (!resources.length) {
  console.error('at least one --resource is required');
  process.exit(2);
}
for (const resource of resources) {
  if (!URL.canParse(resource)) {
    console.error(`--resource ${resource} is not an absolute URL`);
    process.exit(2);
  }
}

const exchangeAudiences = args.audience ?? ['upstream-api'];
const dcrScopes = (args['dcr-scope'] ?? '').split(' ').filter(Boolean);

const origin = `http://127.0.0.1:${port}`;
const issuer = `${origin}${REALM_PATH}`;

// ---------------------------------------------------------------- signing keys

let keyCounter = 0;
function newSigningKey() {
  keyCounter += 1;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = `rsa-${keyCounter}-${crypto.randomBytes(4).toString('hex')}`;
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

// Newest first: oidc-provider signs with the first key that matches the algorithm.
let signingKeys = [newSigningKey()];

// ---------------------------------------------------------------- clients

const staticClients = [
  {
    // The MCP server's own confidential client: it only introspects.
    client_id: 'mcp-gateway',
    client_secret: 'gateway-secret',
    token_endpoint_auth_method: 'client_secret_basic', // _post is accepted as well (see quirks)
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  },
  {
    client_id: 'svc-admin',
    client_secret: 'admin-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'mcp:tools mcp:admin mcp:read',
    realm_roles: ['admin', 'user'],
    token_format: 'opaque',
  },
  {
    client_id: 'svc-user',
    client_secret: 'user-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'mcp:tools mcp:read',
    realm_roles: ['user'],
    token_format: 'opaque',
  },
  {
    client_id: 'svc-jwt',
    client_secret: 'jwt-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'mcp:tools mcp:admin mcp:read',
    realm_roles: ['admin'],
    token_format: 'jwt',
  },
  {
    // The gateway's client toward the upstream API: exchanges callers' tokens (RFC 8693) and
    // gets its own token (client credentials, also used as the actor token).
    client_id: 'mcp-exchanger',
    client_secret: 'exchanger-secret',
    token_endpoint_auth_method: 'client_secret_basic', // _post is accepted as well
    grant_types: [TOKEN_EXCHANGE, 'client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'api:read api:write',
    realm_roles: ['gateway'],
    token_format: 'jwt',
  },
  {
    // Short-lived service tokens (4 s), for refresh tests.
    client_id: 'svc-short',
    client_secret: 'short-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'mcp:tools mcp:read',
    realm_roles: ['user'],
    token_format: 'jwt',
    access_token_ttl: 4,
  },
  {
    client_id: 'test-cli',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:33418/callback'],
  },
];

// ---------------------------------------------------------------- storage

// One store for every Provider instance this process builds (key rotation builds a new one), so
// tokens, grants, sessions, interactions and registered clients survive a rotation. oidc-provider
// 9's own memory adapter keeps a store per Provider instance.
const store = new Map(); // key -> { payload, expiresAt (ms epoch or Infinity) }
const grantMembers = new Map(); // grantId -> Set of keys
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.payload;
}

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    const key = this.key(id);
    store.set(key, { payload, expiresAt });
    if (this.model === 'Session' && payload.uid) {
      store.set(`sessionUid:${payload.uid}`, { payload: id, expiresAt });
    }
    if (payload.userCode) {
      store.set(`userCode:${payload.userCode}`, { payload: id, expiresAt });
    }
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    return id === undefined ? undefined : storeGet(this.key(id));
  }

  async findByUid(uid) {
    return this.find(storeGet(`sessionUid:${uid}`));
  }

  async findByUserCode(userCode) {
    return this.find(storeGet(`userCode:${userCode}`));
  }

  async consume(id) {
    const payload = storeGet(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// ---------------------------------------------------------------- provider configuration

function resourceServerInfo(resourceIndicator, client) {
  if (!resources.includes(resourceIndicator)) {
    throw new errors.InvalidTarget(`unknown resource indicator ${resourceIndicator}`);
  }
  return {
    scope: MCP_SCOPES.join(' '),
    audience: resourceIndicator,
    accessTokenTTL: TOKEN_TTL,
    accessTokenFormat: client?.token_format === 'jwt' ? 'jwt' : 'opaque',
    jwt: { sign: { alg: 'RS256' } },
  };
}

// Claims of exchanged tokens, computed by the grant handler before the token is saved
// (oidc-provider replaces `extra` with what extraTokenClaims returns at save time).
const exchangedClaims = new WeakMap();

async function extraTokenClaims(ctx, token) {
  if (exchangedClaims.has(token)) return exchangedClaims.get(token);
  if (token.accountId) {
    // A user's token (authorization code): the login name is the subject.
    return {
      azp: token.clientId,
      preferred_username: token.accountId,
      email: `${token.accountId}@example.com`,
      realm_access: { roles: [...USER_ROLES] },
    };
  }
  // A service account (client credentials): sub = client_id, as oidc-provider puts in JWTs.
  const client = ctx?.oidc?.client?.clientId === token.clientId
    ? ctx.oidc.client
    : await ctx.oidc.provider.Client.find(token.clientId);
  const roles = Array.isArray(client?.realm_roles) ? client.realm_roles : [];
  return {
    sub: token.clientId,
    azp: token.clientId,
    preferred_username: `service-account-${token.clientId}`,
    email: `${token.clientId}@example.com`,
    realm_access: { roles: [...roles] },
  };
}

function validateExtraClientMetadata(ctx, key, value) {
  if (value === undefined) return;
  if (key === 'access_token_ttl' && !(Number.isInteger(value) && value > 0)) {
    throw new errors.InvalidClientMetadata('access_token_ttl must be a positive integer (seconds)');
  }
  if (key === 'token_format' && !['jwt', 'opaque'].includes(value)) {
    throw new errors.InvalidClientMetadata("token_format must be 'jwt' or 'opaque'");
  }
  if (key === 'realm_roles') {
    // Roles are assigned by the realm, not requested by dynamically registered clients.
    if (ctx?.oidc?.route?.startsWith('registration') || ctx?.oidc?.route?.startsWith('client')) {
      throw new errors.InvalidClientMetadata('realm_roles cannot be registered dynamically');
    }
    if (!Array.isArray(value) || !value.every((role) => typeof role === 'string')) {
      throw new errors.InvalidClientMetadata('realm_roles must be an array of strings');
    }
  }
}

function tokenTTL(ctx, token, client) {
  return client?.access_token_ttl ?? TOKEN_TTL;
}

function configuration() {
  return {
    adapter: SharedMemoryAdapter,
    clients: staticClients,
    jwks: { keys: signingKeys },
    cookies: { keys: ['openapi-mcp-test-cookie-key-1', 'openapi-mcp-test-cookie-key-0'] },
    scopes: ['openid', 'offline_access', ...MCP_SCOPES, ...API_SCOPES],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username'],
    },
    extraClientMetadata: {
      properties: ['realm_roles', 'token_format', 'access_token_ttl'],
      validator: validateExtraClientMetadata,
    },
    extraTokenClaims,
    // Like Keycloak: a refresh token whenever the client may use the grant (oidc-provider's
    // default also wants the offline_access scope, which it only keeps with prompt=consent).
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { sub, preferred_username: sub, email: `${sub}@example.com`, email_verified: true };
        },
      };
    },
    clientBasedCORS(ctx, requestOrigin) {
      const { hostname } = new URL(requestOrigin);
      return hostname === '127.0.0.1' || hostname === 'localhost';
    },
    routes: {
      authorization: '/protocol/openid-connect/auth',
      token: '/protocol/openid-connect/token',
      introspection: '/protocol/openid-connect/token/introspect',
      revocation: '/protocol/openid-connect/revoke',
      jwks: '/protocol/openid-connect/certs',
      userinfo: '/protocol/openid-connect/userinfo',
      end_session: '/protocol/openid-connect/logout',
      registration: '/clients-registrations/openid-connect',
      device_authorization: '/protocol/openid-connect/auth/device',
      code_verification: '/device',
      pushed_authorization_request: '/protocol/openid-connect/ext/par/request',
      backchannel_authentication: '/protocol/openid-connect/ext/ciba/auth',
      challenge: '/challenge',
      credential: '/credential',
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        async allowedPolicy(ctx, client) {
          return INTROSPECTORS.has(client.clientId);
        },
      },
      revocation: { enabled: true },
      registration: { enabled: true, initialAccessToken: false },
      resourceIndicators: {
        enabled: true,
        async defaultResource(ctx, client, oneOf) {
          if (oneOf) return oneOf.includes(resources[0]) ? resources[0] : oneOf[0];
          return resources[0];
        },
        async getResourceServerInfo(ctx, resourceIndicator, client) {
          return resourceServerInfo(resourceIndicator, client);
        },
        async useGrantedResource() {
          return true;
        },
      },
    },
    pkce: {
      required: (ctx, client) => client.clientAuthMethod === 'none',
    },
    ttl: {
      AccessToken: tokenTTL,
      ClientCredentials: tokenTTL,
      AuthorizationCode: 60,
      IdToken: TOKEN_TTL,
      RefreshToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
  };
}

// ---------------------------------------------------------------- RFC 8693 token exchange

const EXCHANGE_PARAMETERS = ['audience', 'resource', 'scope', 'requested_token_type', 'subject_token',
  'subject_token_type', 'actor_token', 'actor_token_type'];

function list(value) {
  if (value === undefined || value === null || value === '') return [];
  return Array.isArray(value) ? value : [value];
}

// The kid's public key among the realm's signing keys (current and rotated out).
function verifyRealmJwt(value) {
  const [headerPart, payloadPart, signaturePart] = value.split('.');
  let header;
  let payload;
  try {
    header = JSON.parse(Buffer.from(headerPart, 'base64url').toString('utf8'));
    payload = JSON.parse(Buffer.from(payloadPart, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  const jwk = signingKeys.find((key) => key.kid === header?.kid);
  if (!jwk || header.alg !== 'RS256') return undefined;
  const { d, p, q, dp, dq, qi, ...publicJwk } = jwk;
  const publicKey = crypto.createPublicKey({ key: publicJwk, format: 'jwk' });
  const signed = Buffer.from(`${headerPart}.${payloadPart}`);
  if (!crypto.verify('RSA-SHA256', signed, publicKey, Buffer.from(signaturePart ?? '', 'base64url'))) {
    return undefined;
  }
  return payload?.iss === issuer && typeof payload.jti === 'string' ? payload : undefined;
}

// An active access token this realm issued, as { accountId, clientId, extra }, or undefined.
// Opaque tokens are looked up in the store (revoked and expired ones are gone); JWT access tokens
// are not stored by oidc-provider, so a valid signature by a realm key, `iss` and `exp` decide.
function findRealmToken(value) {
  if (typeof value !== 'string' || !value) return undefined;
  const now = Math.floor(Date.now() / 1000);
  if (value.split('.').length === 3) {
    const payload = verifyRealmJwt(value);
    if (!payload || typeof payload.exp !== 'number' || payload.exp <= now) return undefined;
    const {
      preferred_username: preferredUsername, email, realm_access: realmAccess, act,
    } = payload;
    return {
      accountId: payload.sub,
      clientId: payload.client_id,
      extra: {
        preferred_username: preferredUsername, email, realm_access: realmAccess, act,
      },
    };
  }
  for (const model of ['AccessToken', 'ClientCredentials']) {
    const stored = storeGet(`${model}:${value}`);
    if (stored && typeof stored.exp === 'number' && stored.exp > now) return stored;
  }
  return undefined;
}

function checkTokenType(name, type) {
  if (type !== TOKEN_TYPES.access_token && type !== TOKEN_TYPES.jwt) {
    throw new errors.InvalidRequest(`unsupported ${name} ${type}`);
  }
}

function subjectOf(stored) {
  return stored.accountId ?? stored.clientId;
}

async function tokenExchangeHandler(ctx) {
  const { client, params, provider } = ctx.oidc;
  if (!params.subject_token) throw new errors.InvalidRequest('missing required parameter subject_token');
  if (!params.subject_token_type) throw new errors.InvalidRequest('missing required parameter subject_token_type');
  checkTokenType('subject_token_type', params.subject_token_type);
  const subject = findRealmToken(params.subject_token);
  if (!subject) throw new errors.InvalidRequest('subject_token is invalid, expired or was not issued by this realm');

  let actor;
  if (params.actor_token !== undefined || params.actor_token_type !== undefined) {
    if (!params.actor_token || !params.actor_token_type) {
      throw new errors.InvalidRequest('actor_token and actor_token_type must be given together');
    }
    checkTokenType('actor_token_type', params.actor_token_type);
    actor = findRealmToken(params.actor_token);
    if (!actor) throw new errors.InvalidRequest('actor_token is invalid, expired or was not issued by this realm');
  }

  const requested = params.requested_token_type ?? TOKEN_TYPES.access_token;
  checkTokenType('requested_token_type', requested);

  const targets = [];
  for (const resource of list(params.resource)) {
    if (!resources.includes(resource)) throw new errors.InvalidTarget(`unknown resource ${resource}`);
    targets.push(resource);
  }
  for (const audience of list(params.audience)) {
    if (!exchangeAudiences.includes(audience) && !resources.includes(audience)) {
      throw new errors.InvalidTarget(`unknown audience ${audience}`);
    }
    targets.push(audience);
  }
  const audiences = [...new Set(targets)];
  if (audiences.length !== 1) {
    throw new errors.InvalidTarget('give exactly one audience or resource (one target per exchanged token)');
  }

  const allowed = (client.scope ?? '').split(' ').filter(Boolean);
  const wanted = (params.scope ?? '').split(' ').filter(Boolean);
  const unknown = wanted.filter((scope) => !allowed.includes(scope));
  if (unknown.length) throw new errors.InvalidScope(`scope not allowed for this client: ${unknown.join(' ')}`, unknown.join(' '));
  const scope = (wanted.length ? wanted : allowed).join(' ') || undefined;

  const format = requested === TOKEN_TYPES.jwt || client.token_format === 'jwt' ? 'jwt' : 'opaque';
  const token = new provider.AccessToken({
    accountId: subjectOf(subject),
    client,
    scope,
    gty: 'token_exchange',
    expiresIn: client.access_token_ttl ?? TOKEN_TTL,
  });
  token.resourceServer = new provider.ResourceServer(audiences[0], {
    audience: audiences[0],
    scope,
    accessTokenFormat: format,
    accessTokenTTL: client.access_token_ttl ?? TOKEN_TTL,
    jwt: { sign: { alg: 'RS256' } },
  });
  const subjectExtra = subject.extra ?? {};
  const claims = {
    azp: client.clientId,
    preferred_username: subjectExtra.preferred_username,
    email: subjectExtra.email,
    realm_access: subjectExtra.realm_access,
  };
  if (actor) {
    claims.act = { sub: subjectOf(actor) };
    if (subjectExtra.act) claims.act.act = subjectExtra.act;
  } else if (subjectExtra.act) {
    claims.act = subjectExtra.act;
  }
  exchangedClaims.set(token, claims);
  ctx.oidc.entity('AccessToken', token);
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: requested,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope,
  };
}

// What the tests can see of and do to the token endpoint (outside the realm, /__test/...).
const tokenCounters = {}; // grant_type -> n, and `grant_type client_id` -> n
let introspections = 0; // POSTs to the introspection endpoint (the scale-out test: once per token for all replicas)
const tokenFaults = new Map(); // client_id -> { mode, delay_ms, status }

function count(key) {
  tokenCounters[key] = (tokenCounters[key] ?? 0) + 1;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// Koa middleware (runs before oidc-provider's router): counts token requests, applies a fault set
// for the requesting client, and gives client_credentials requests without `scope` the client's.
function tokenEndpointExtras(provider) {
  return async (ctx, next) => {
    if (
      ctx.method === 'POST'
      && ctx.path === '/protocol/openid-connect/token'
      && ctx.is('application/x-www-form-urlencoded')
    ) {
      const chunks = [];
      for await (const chunk of ctx.req) chunks.push(chunk);
      const body = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      const grantType = body.get('grant_type') ?? '';
      const clientId = basicClientId(ctx.headers.authorization) ?? body.get('client_id') ?? '';
      count(grantType);
      count(`${grantType} ${clientId}`);
      const fault = tokenFaults.get(clientId);
      if (fault?.mode === 'reset') {
        ctx.req.socket.destroy();
        return;
      }
      if (fault?.mode === 'slow') await sleep(fault.delay_ms ?? 10000);
      if (fault?.mode === 'status') {
        ctx.status = fault.status ?? 503;
        ctx.body = { error: 'temporarily_unavailable', error_description: 'the realm is down (test fault)' };
        return;
      }
      if (fault?.mode === 'garbage') {
        ctx.status = 200;
        ctx.type = 'text/html';
        ctx.body = '<html><body>maintenance</body></html>';
        return;
      }
      if (grantType === 'client_credentials' && !body.has('scope')) {
        const client = clientId ? await provider.Client.find(clientId).catch(() => undefined) : undefined;
        if (client?.scope) body.set('scope', client.scope);
      }
      // oidc-provider reads an already consumed body from req.body.
      ctx.req.body = body.toString();
    }
    await next();
  };
}

function basicClientId(authorization) {
  const [scheme, value] = (authorization ?? '').split(' ');
  if (scheme?.toLowerCase() !== 'basic' || !value) return undefined;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon === -1) return undefined;
  try {
    return decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, '%20'));
  } catch {
    return undefined;
  }
}

// --dcr-scope: a dynamic registration is registered for the allowed scopes too (Keycloak's
// Allowed Client Scopes policy), so its later step-up requests are within what it may ask for.
function registrationExtras() {
  return async (ctx, next) => {
    if (dcrScopes.length && ctx.method === 'POST' && ctx.path === '/clients-registrations/openid-connect'
        && ctx.is('application/json')) {
      const chunks = [];
      for await (const chunk of ctx.req) chunks.push(chunk);
      let metadata;
      try {
        metadata = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        metadata = undefined;
      }
      if (metadata && typeof metadata === 'object') {
        const asked = typeof metadata.scope === 'string' ? metadata.scope.split(' ').filter(Boolean) : [];
        metadata.scope = [...new Set([...asked, ...dcrScopes])].join(' ');
      }
      // oidc-provider reads an already consumed body from req.body.
      ctx.req.body = metadata === undefined ? Buffer.concat(chunks).toString('utf8') : JSON.stringify(metadata);
    }
    await next();
  };
}

// Keycloak lists these; oidc-provider does not (RFC 8414's default would be client_secret_basic).
function discoveryExtras() {
  return async (ctx, next) => {
    await next();
    if (ctx.method === 'GET' && ctx.path.includes('/.well-known/') && ctx.body?.issuer === issuer) {
      ctx.body.introspection_endpoint_auth_methods_supported ??= [
        'client_secret_basic', 'client_secret_post'];
    }
  };
}

function buildProvider() {
  const provider = new Provider(issuer, configuration());
  provider.registerGrantType(TOKEN_EXCHANGE, tokenExchangeHandler, EXCHANGE_PARAMETERS, ['audience', 'resource']);
  provider.use(tokenEndpointExtras(provider));
  provider.use(registrationExtras());
  provider.use(discoveryExtras());
  for (const event of ['server_error', 'grant.error', 'introspection.error', 'registration_create.error',
    'authorization.error', 'userinfo.error', 'jwks.error', 'discovery.error']) {
    provider.on(event, (ctx, err) => {
      const detail = err?.error_description ? ` (${err.error_description})` : '';
      console.error(`[auth-server] ${event}: ${err?.name ?? 'Error'} ${err?.message ?? err}${detail}`);
    });
  }
  return { provider, handle: provider.callback() };
}

// Rotation builds a new provider with the new key first and the older keys after it; the shared
// adapter keeps the stored state.
let current = buildProvider();

// ---------------------------------------------------------------- HTTP

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(text);
}

const server = http.createServer((req, res) => {
  const { pathname } = new URL(req.url, origin);
  res.on('finish', () => {
    console.error(`[auth-server] ${req.method} ${pathname} -> ${res.statusCode}`);
  });

  if (pathname === '/__test/health' && req.method === 'GET') {
    sendJson(res, 200, { status: 'ok', issuer, kids: signingKeys.map((key) => key.kid) });
    return;
  }
  if (pathname === '/__test/counters' && req.method === 'GET') {
    sendJson(res, 200, { token_requests: tokenCounters, introspections });
    return;
  }
  if (pathname === '/__test/fault' && req.method === 'POST') {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      let fault;
      try {
        fault = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        sendJson(res, 400, { error: 'invalid_request', error_description: 'the body is not JSON' });
        return;
      }
      const modes = ['slow', 'status', 'garbage', 'reset', 'none'];
      if (typeof fault?.client_id !== 'string' || !modes.includes(fault.mode)) {
        sendJson(res, 400, { error: 'invalid_request', error_description: `give client_id and mode (${modes.join('|')})` });
        return;
      }
      if (fault.mode === 'none') tokenFaults.delete(fault.client_id);
      else tokenFaults.set(fault.client_id, fault);
      sendJson(res, 200, { faults: Object.fromEntries(tokenFaults) });
    });
    return;
  }
  if (pathname === '/__test/rotate' && req.method === 'POST') {
    const key = newSigningKey();
    signingKeys = [key, ...signingKeys];
    current = buildProvider();
    sendJson(res, 200, { kid: key.kid, kids: signingKeys.map((k) => k.kid) });
    return;
  }
  if (pathname === `${REALM_PATH}/protocol/openid-connect/token/introspect` && req.method === 'POST') {
    introspections += 1;
  }
  if (pathname === REALM_PATH || pathname.startsWith(`${REALM_PATH}/`)) {
    // Mounting: oidc-provider derives its mount path from req.originalUrl minus req.url.
    req.originalUrl = req.url;
    req.url = req.url.slice(REALM_PATH.length) || '/';
    if (!req.url.startsWith('/')) req.url = `/${req.url}`;
    current.handle(req, res);
    return;
  }
  sendJson(res, 404, { error: 'not_found', error_description: `no route for ${pathname}` });
});

server.on('error', (err) => {
  console.error(`[auth-server] ${err.message}`);
  process.exit(1);
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
