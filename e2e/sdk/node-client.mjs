// The SDK in Node for e2e/sdk_test.go: connects with @idmq/client, subscribes to users/<me>/#, and reports
// every event as one JSON line on stdout. Commands on stdin: "signout" (keep the session), "signout-end"
// (end it). The IdP token comes from SDK_TOKEN_URL at every getToken, as an IdP SDK would hand it out.
// Never prints a token.
import { createInterface } from 'node:readline';
import process from 'node:process';

import { connectWithToken } from '../../clients/js/src/index.js';

const env = (name) => {
  const v = process.env[name];
  if (!v) { process.stderr.write(`sdk node client: ${name} is required\n`); process.exit(2); }
  return v;
};
const out = (event, fields = {}) => process.stdout.write(`${JSON.stringify({ event, t: Date.now(), ...fields })}\n`);

const tokenURL = env('SDK_TOKEN_URL');
let client;
try {
  client = await connectWithToken({
    brokerUrl: env('SDK_BROKER_URL'),
    exchangeUrl: env('SDK_EXCHANGE_URL'),
    provider: process.env.SDK_PROVIDER || undefined,
    getToken: async () => {
      const r = await fetch(tokenURL, { cache: 'no-store' });
      if (!r.ok) throw new Error(`token source: HTTP ${r.status}`);
      return r.text();
    },
    refreshBefore: Number(env('SDK_REFRESH_BEFORE')),
    protocolVersion: Number(process.env.SDK_PROTOCOL_VERSION ?? 5),
    onTokenRefreshed: (e) => out('refreshed', { inPlace: e.inPlace, expiresAt: e.expiresAt.toISOString() }),
    onTokenExpiring: (e) => out('expiring', { expiresIn: e.expiresIn }),
    onTokenError: (e) => out('tokenError', { code: e.code, action: e.action, message: e.message }),
    onAuthError: (e) => out('authError', { code: e.code, action: e.action, message: e.message }),
  });
} catch (err) {
  out('connectFailed', { code: err.code, message: err.message });
  process.exit(1);
}
client.on('message', (topic, payload) => out('message', { topic, payload: payload.toString() }));
client.on('close', () => out('close'));
client.on('connect', () => out('reconnected'));
await client.subscribeAsync(`users/${client.username}/#`, { qos: 1 });
out('subscribed', { username: client.username, clientId: client.options.clientId, expiresAt: client.credentialsExpireAt.toISOString() });

for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'signout' || line === 'signout-end') {
    await client.signOut({ endSession: line === 'signout-end' });
    out('signedOut', { stats: client.refreshStats });
    // No exit() here: the process ending by itself shows the SDK left no timer or socket behind.
    process.stdin.destroy();
    break;
  }
  if (line === 'stats') out('stats', { stats: client.refreshStats });
}
