// The browser side of idmq's token exchange, as a web app does it:
//   1. get the identity provider's token (here from the page's own server, see getIdPToken),
//   2. POST it to idmq's /v2/tokens/exchange with fetch (a cross-origin call: idmq must list this origin in
//      http.cors_origins),
//   3. connect with MQTT.js over WSS using the returned credentials and subscribe to users/<me>/#.
// Where idmq lives comes from the query string: ?api=https://host:port&wss=wss://host:port/mqtt
'use strict';

const params = new URLSearchParams(location.search);
const api = params.get('api');
const wssURL = params.get('wss');

const $ = (id) => document.getElementById(id);

function show(state, text) {
  document.body.dataset.state = state;
  $('status').textContent = text;
}

// fail keeps the first error: a refused WSS connection reports an error and then a close.
function fail(message) {
  if (document.body.dataset.state === 'error') return;
  $('error').textContent = message;
  show('error', 'error');
}

// getIdPToken stands in for an IdP SDK's getToken(). The test's OIDC provider (npm oidc-provider) refuses CORS
// on its token endpoint by default and only offers the client_credentials grant, whose secret must not reach a
// browser, so the page's own server performs the grant and hands the page the resulting access token.
async function getIdPToken() {
  const res = await fetch('/idp-token', { cache: 'no-store' });
  if (!res.ok) throw new Error(`identity provider: HTTP ${res.status}`);
  return (await res.text()).trim();
}

// exchange swaps the IdP token for MQTT credentials. fetch rejects without a response when the browser blocks
// the call (CORS) or cannot reach idmq; a no-cors probe tells the two apart, since it needs no CORS headers.
async function exchange(idpToken) {
  let res;
  try {
    res = await fetch(`${api}/v2/tokens/exchange`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: idpToken }),
    });
  } catch (err) {
    const reachable = await fetch(`${api}/healthz`, { mode: 'no-cors', cache: 'no-store' }).then(() => true, () => false);
    if (reachable) {
      // Most often the origin is missing; a wrong exchange URL also fails the preflight (404 without CORS headers).
      throw new Error(`token exchange blocked by CORS (${err.message}): origin ${location.origin} is not in idmq's http.cors_origins, or ${api}/v2/tokens/exchange is not idmq's exchange URL`);
    }
    throw new Error(`token exchange failed (${err.message}): idmq's API at ${api} is unreachable (network or TLS certificate)`);
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new Error(`token exchange refused: HTTP ${res.status} ${body.error ?? ''}: ${body.message ?? ''}`);
  }
  return body;
}

function connect(creds) {
  const topic = `users/${creds.mqtt_username}/#`;
  const client = mqtt.connect(wssURL, {
    protocolVersion: 5,
    clientId: creds.client_id,
    username: creds.mqtt_username,
    password: creds.mqtt_password,
    reconnectPeriod: 0, // a failure must show, not retry forever
    connectTimeout: 10_000,
  });
  let connected = false;
  client.on('connect', () => {
    connected = true;
    show('connecting', `connected; subscribing to ${topic}`);
    client.subscribe(topic, { qos: 1 }, (err, granted) => {
      if (err) return fail(`subscribe ${topic}: ${err.message}`);
      const code = granted[0]?.qos ?? 128;
      if (code >= 128) return fail(`subscribe ${topic} refused: reason code 0x${code.toString(16)}`);
      show('subscribed', `subscribed to ${topic}`);
    });
  });
  client.on('message', (t, payload) => {
    const li = document.createElement('li');
    li.textContent = `${t}: ${new TextDecoder().decode(payload)}`;
    $('messages').append(li);
    show('received', `received ${$('messages').children.length} message(s) on ${topic}`);
  });
  client.on('error', (err) => fail(`MQTT over WSS (${wssURL}): ${err.message}`));
  client.on('close', () => {
    if (!connected) fail(`MQTT over WSS (${wssURL}): connection closed before CONNACK`);
  });
}

async function main() {
  $('origin').textContent = location.origin;
  if (!api || !wssURL) return fail('missing ?api=https://host:port&wss=wss://host:port/mqtt');
  show('signing-in', 'signing in with the identity provider');
  const idpToken = await getIdPToken();
  show('exchanging', 'exchanging the identity token for MQTT credentials');
  const creds = await exchange(idpToken);
  $('user').textContent = creds.mqtt_username;
  $('expires').textContent = `${creds.expires_at} (in ${creds.expires_in} s)`;
  show('connecting', `connecting to ${wssURL}`);
  connect(creds);
}

main().catch((err) => fail(err.message));
