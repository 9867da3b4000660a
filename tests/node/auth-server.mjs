// A real OAuth 2 authorization server for the integration tests, laid out like a Keycloak realm.
//
//   node tests/node/auth-server.mjs --port P --resource <MCP URL> [--resource <other URL> ...]
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
// - outside the realm: GET /__test/health, POST /__test/rotate (new RSA signing key with a new
//   kid becomes the active one; older keys stay in the JWKS).
// Only 127.0.0.1 is used; there are no outbound requests.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import { errors, Provider } from 'oidc-provider';

const REALM_PATH = '/realms/demo';
const MCP_SCOPES = ['mcp:tools', 'mcp:admin', 'mcp:read'];
const TOKEN_TTL = 300;
const INTROSPECTORS = new Set(['mcp-gateway']);
const USER_ROLES = ['user'];

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    resource: { type: 'string', multiple: true },
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

async function extraTokenClaims(ctx, token) {
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

function configuration() {
  return {
    adapter: SharedMemoryAdapter,
    clients: staticClients,
    jwks: { keys: signingKeys },
    cookies: { keys: ['openapi-mcp-test-cookie-key-1', 'openapi-mcp-test-cookie-key-0'] },
    scopes: ['openid', 'offline_access', ...MCP_SCOPES],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username'],
    },
    extraClientMetadata: {
      properties: ['realm_roles', 'token_format'],
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
      AccessToken: TOKEN_TTL,
      ClientCredentials: TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: TOKEN_TTL,
      RefreshToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
  };
}

// Koa middleware (runs before oidc-provider's router).
function defaultClientCredentialsScope(provider) {
  return async (ctx, next) => {
    if (
      ctx.method === 'POST'
      && ctx.path === '/protocol/openid-connect/token'
      && ctx.is('application/x-www-form-urlencoded')
    ) {
      const chunks = [];
      for await (const chunk of ctx.req) chunks.push(chunk);
      const body = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      if (body.get('grant_type') === 'client_credentials' && !body.has('scope')) {
        const clientId = basicClientId(ctx.headers.authorization) ?? body.get('client_id');
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
  provider.use(defaultClientCredentialsScope(provider));
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
  if (pathname === '/__test/rotate' && req.method === 'POST') {
    const key = newSigningKey();
    signingKeys = [key, ...signingKeys];
    current = buildProvider();
    sendJson(res, 200, { kid: key.kid, kids: signingKeys.map((k) => k.kid) });
    return;
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
