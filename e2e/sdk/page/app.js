// A web app using @idmq/client, for e2e/sdk_test.go: exchange, connect over WSS, subscribe to users/<me>/#,
// and show each in-place refresh and message in <body data-state>: subscribed, refreshed-N, received-N.
// Any close of the connection is an error here: in-place refresh must not reconnect.
import { connectWithToken } from '/sdk/index.js';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const show = (state, text = state) => { document.body.dataset.state = state; $('status').textContent = text; };
const fail = (message) => {
  if (document.body.dataset.state === 'error') return;
  $('error').textContent = message;
  show('error');
};

$('origin').textContent = location.origin;
show('connecting');
let refreshes = 0;
let received = 0;
try {
  const client = await connectWithToken({
    brokerUrl: params.get('wss'),
    exchangeUrl: `${params.get('api')}/v2/tokens/exchange`,
    getToken: () => fetch('/idp-token', { cache: 'no-store' }).then((r) => r.text()),
    refreshBefore: Number(params.get('refreshBefore')),
    onTokenRefreshed: (e) => {
      if (!e.inPlace) return fail('the refresh reconnected instead of refreshing in place');
      refreshes++;
      $('expires').textContent = e.expiresAt.toISOString();
      show(`refreshed-${refreshes}`);
    },
    onTokenError: (e) => fail(`onTokenError ${e.code}: ${e.message}`),
    onAuthError: (e) => fail(`onAuthError ${e.code}: ${e.message}`),
  });
  client.on('close', () => fail('the connection closed'));
  client.on('message', (topic, payload) => {
    const li = document.createElement('li');
    li.textContent = `${topic}: ${new TextDecoder().decode(payload)}`;
    $('messages').append(li);
    received++;
    show(`received-${received}`);
  });
  await client.subscribeAsync(`users/${client.username}/#`, { qos: 1 });
  $('user').textContent = client.username;
  $('expires').textContent = client.credentialsExpireAt.toISOString();
  show('subscribed');
} catch (err) {
  fail(`${err.code ?? 'error'}: ${err.message}`);
}
