// Getting MQTT credentials: the app's IdP token, exchanged at idmq's endpoint or sent as it is.
import { IdmqError, exchangeError } from './errors.js';

/**
 * @returns {Promise<{username: string, password: string, clientId?: string, expiresAt: number, issuedAt: number, provider?: string}>}
 */
export async function obtainCredentials({ getToken, exchangeUrl, provider, exchangeHeaders, username, fetch: fetchFn, now }) {
  let token;
  try {
    token = await getToken();
  } catch (cause) {
    throw new IdmqError('token_source_failed', `getToken threw: ${cause?.message ?? cause}`, { source: 'getToken', cause });
  }
  if (!token) {
    // The IdP has no session any more (Clerk's getToken() resolves null after sign-out).
    throw new IdmqError('signed_out', 'getToken returned no token: the user is signed out', { source: 'getToken' });
  }
  const issuedAt = now();
  if (!exchangeUrl) return rawTokenCredentials(token, username, issuedAt);

  let resp;
  try {
    resp = await fetchFn(exchangeUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...exchangeHeaders },
      body: JSON.stringify(provider ? { token, provider } : { token }),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (cause) {
    // A browser reports a CORS refusal as a bare TypeError: the origin is missing from http.cors_origins,
    // or the endpoint cannot be reached at all.
    throw new IdmqError('network_error', `exchange request failed: ${cause?.message ?? cause}`, { source: 'exchange', cause });
  }
  let body = null;
  try { body = await resp.json(); } catch { /* an error page or empty body: the status still says enough */ }
  if (!resp.ok) throw exchangeError(resp.status, body, resp.headers.get('Retry-After'));
  if (!body || typeof body.mqtt_password !== 'string' || typeof body.mqtt_username !== 'string') {
    throw new IdmqError('internal_error', 'exchange answered 200 without mqtt_username/mqtt_password', { source: 'exchange' });
  }
  const expiresAt = body.expires_at ? Date.parse(body.expires_at) : issuedAt + (body.expires_in ?? 0) * 1000;
  return {
    username: body.mqtt_username,
    password: body.mqtt_password,
    clientId: body.client_id,
    expiresAt,
    issuedAt,
    provider: body.provider,
  };
}

// Without an exchange the IdP token is the MQTT password; its exp says when to refresh.
function rawTokenCredentials(token, username, issuedAt) {
  const claims = decodeClaims(token);
  const expiresAt = typeof claims.exp === 'number' ? claims.exp * 1000 : Number.POSITIVE_INFINITY;
  return { username: username ?? claims.email ?? claims.sub ?? '', password: token, expiresAt, issuedAt };
}

/** The payload of a JWT, unverified (the broker verifies): only exp and the username are read from it. */
export function decodeClaims(token) {
  const part = token.split('.')[1];
  if (!part) throw new IdmqError('malformed', 'the token from getToken is not a JWT', { source: 'getToken' });
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(part.length + ((4 - (part.length % 4)) % 4), '=');
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (cause) {
    throw new IdmqError('malformed', 'the token from getToken has no readable payload', { source: 'getToken', cause });
  }
}
