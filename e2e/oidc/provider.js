// A real OpenID Connect provider (panva/oidc-provider, OpenID Certified) for idmq's end-to-end tests.
// Loopback only, in-memory, fresh keys per run: it exists to hand out genuine JWT access tokens over HTTP.
//
// Usage: node provider.js [--port N]          (or OIDC_PORT=N; 0 or unset = any free port)
// Environment:
//   OIDC_PORT        port on 127.0.0.1 (default 0: the kernel picks one)
//   OIDC_TOKEN_TTL   access token lifetime in seconds (default 300); clients may override with token_ttl
//   OIDC_EXIT_ON_STDIN_EOF=1  exit when stdin reaches EOF (set by the Go helper)
//   OIDC_CLIENTS     JSON array of confidential client_credentials clients:
//                    [{"client_id", "client_secret", "alg": "RS256"|"ES256", "token_ttl": seconds,
//                      "claims": {extra access token claims}}]
//                    default: one client "idmq-e2e" / "idmq-e2e-secret" with email/org_id/app_metadata claims.
// When ready it prints exactly one JSON line on stdout: {"ready":true,"issuer":"http://127.0.0.1:N","port":N}.
// Everything else (oidc-provider's notices included) goes to stderr. With OIDC_EXIT_ON_STDIN_EOF=1 it exits
// when stdin closes, so a test runner that dies without cleaning up does not leave it behind.
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

// oidc-provider prints NOTICE lines with console.info; stdout is reserved for the readiness line.
console.info = console.error;

function fail(message) {
  console.error(`oidc e2e provider: ${message}`);
  process.exit(2);
}

function parsePort() {
  const i = process.argv.indexOf('--port');
  const raw = i >= 0 ? process.argv[i + 1] : (process.env.OIDC_PORT ?? '0');
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`invalid port ${JSON.stringify(raw)}`);
  return port;
}

function parseTTL(raw, what) {
  const ttl = Number(raw);
  if (!Number.isInteger(ttl) || ttl < 1) fail(`${what} must be a positive whole number of seconds, got ${JSON.stringify(raw)}`);
  return ttl;
}

const defaultClients = [{
  client_id: 'idmq-e2e',
  client_secret: 'idmq-e2e-secret',
  claims: { email: 'e2e-service@example.com', org_id: 'org-e2e', app_metadata: { plan: 'pro' } },
}];

function parseClients(raw) {
  if (raw === undefined || raw === '') return defaultClients;
  let clients;
  try {
    clients = JSON.parse(raw);
  } catch (err) {
    fail(`OIDC_CLIENTS is not JSON: ${err.message}`);
  }
  if (!Array.isArray(clients) || clients.length === 0) fail('OIDC_CLIENTS must be a non-empty JSON array');
  for (const [i, c] of clients.entries()) {
    if (typeof c.client_id !== 'string' || !c.client_id) fail(`OIDC_CLIENTS[${i}].client_id is required`);
    if (typeof c.client_secret !== 'string' || !c.client_secret) fail(`OIDC_CLIENTS[${i}].client_secret is required`);
    if (c.alg !== undefined && !['RS256', 'ES256'].includes(c.alg)) fail(`OIDC_CLIENTS[${i}].alg must be RS256 or ES256`);
    if (c.token_ttl !== undefined) parseTTL(c.token_ttl, `OIDC_CLIENTS[${i}].token_ttl`);
    if (c.claims !== undefined && (typeof c.claims !== 'object' || Array.isArray(c.claims))) fail(`OIDC_CLIENTS[${i}].claims must be an object`);
  }
  return clients;
}

// Fresh signing keys per run: RSA 2048 for RS256 (the default alg) and P-256 for ES256.
function signingKey(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}` };
}

const defaultTTL = parseTTL(process.env.OIDC_TOKEN_TTL ?? '300', 'OIDC_TOKEN_TTL');
const clients = parseClients(process.env.OIDC_CLIENTS);
const byID = new Map(clients.map((c) => [c.client_id, c]));
const keys = [
  signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
  signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
];

// The issuer must be known before the Provider exists, and port 0 is only resolved by listening:
// listen first, then build the provider and install it as the request handler.
const server = http.createServer();
server.listen(parsePort(), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    jwks: { keys },
    // Cookies are unused (no login pages); random keys only silence the startup warning.
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    clients: clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    features: {
      clientCredentials: { enabled: true },
      // Login pages are not used: only client_credentials is offered.
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // Any absolute URI (mqtt://idmq, https://mqtt.example) is accepted as a resource and becomes the
        // token's aud; the token is then a signed JWT (RFC 9068) instead of an opaque string.
        getResourceServerInfo(ctx, resourceIndicator, client) {
          const c = byID.get(client.clientId);
          return {
            audience: resourceIndicator,
            scope: 'mqtt',
            accessTokenFormat: 'jwt',
            accessTokenTTL: c?.token_ttl ?? defaultTTL,
            jwt: { sign: { alg: c?.alg ?? 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims(ctx, token) {
      return byID.get(token.clientId)?.claims;
    },
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? defaultTTL,
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? defaultTTL,
    },
  });
  provider.on('server_error', (ctx, err) => console.error('oidc e2e provider: server_error', err));

  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ ready: true, issuer, port })}\n`);
});
server.on('error', (err) => fail(`listen: ${err.message}`));

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.env.OIDC_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
