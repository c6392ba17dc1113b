// Server-side token exchange for idmq (Node 18+, no dependencies). Use it when idmq has http.api_keys set:
// then only your backend may call the exchange, and browsers get MQTT credentials from your backend.
//
//   import { exchangeForMqtt } from './exchange.mjs';
//   const creds = await exchangeForMqtt(idpToken); // {mqtt_username, mqtt_password, client_id, expires_at, ...}
//
// Environment: IDMQ_URL (idmq's http.address, e.g. https://mqtt.example.com:8080) and IDMQ_API_KEY (one of
// http.api_keys). From a shell: IDMQ_URL=... IDMQ_API_KEY=... node exchange.mjs <IdP JWT>
import process from 'node:process';
import { pathToFileURL } from 'node:url';

// ExchangeError carries idmq's stable error code (invalid_request, token_expired, invalid_audience, ...).
export class ExchangeError extends Error {
  constructor(status, code, message) {
    super(`idmq token exchange: HTTP ${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}

export async function exchangeForMqtt(idpToken, { provider, url = process.env.IDMQ_URL, apiKey = process.env.IDMQ_API_KEY } = {}) {
  if (!url) throw new Error('IDMQ_URL is not set');
  const headers = { 'Content-Type': 'application/json' };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`; // the API key, never the IdP token, goes here
  const res = await fetch(new URL('/v2/tokens/exchange', url), {
    method: 'POST',
    headers,
    body: JSON.stringify(provider ? { token: idpToken, provider } : { token: idpToken }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new ExchangeError(res.status, body.error ?? 'unknown', body.message ?? res.statusText);
  return body;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const token = process.argv[2];
  if (!token) {
    console.error('usage: IDMQ_URL=https://host:port IDMQ_API_KEY=key node exchange.mjs <IdP JWT>');
    process.exit(2);
  }
  try {
    const creds = await exchangeForMqtt(token);
    console.log(JSON.stringify(creds, null, 2));
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
