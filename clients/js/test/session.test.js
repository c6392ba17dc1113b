// The refresh loop with an injected clock and fetch: no broker, no sleeps.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';

import { Session } from '../src/session.js';

function fakeClock(start = 1_700_000_000_000) {
  let now = start;
  let timers = [];
  let seq = 0;
  return {
    now: () => now,
    setTimeout: (fn, ms) => { const id = ++seq; timers.push({ id, at: now + ms, fn }); return id; },
    clearTimeout: (id) => { timers = timers.filter((t) => t.id !== id); },
    pending: () => timers.map((t) => t.at - now),
    // advance runs every timer due by now+ms, in order, letting promises settle between them.
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        const t = timers[0];
        if (!t || t.at > end) break;
        timers.shift();
        now = t.at;
        t.fn();
        for (let i = 0; i < 20; i++) await Promise.resolve();
      }
      now = end;
    },
  };
}

// exchange answers from a queue: {status, body} or a credential of ttl seconds.
function fakeExchange(clock, answers) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push(JSON.parse(init.body));
    const a = answers.shift() ?? { ttl: 60 };
    if (a.status) return new Response(JSON.stringify(a.body), { status: a.status, headers: { 'Content-Type': 'application/json' } });
    return Response.json({
      mqtt_username: 'alice@example.com', mqtt_password: `cred-${calls.length}`, client_id: 'alice-1',
      expires_at: new Date(clock.now() + a.ttl * 1000).toISOString(), expires_in: a.ttl,
    });
  };
  return { fetch, calls };
}

function sessionWith(clock, fetch, extra = {}) {
  const events = [];
  const s = new Session({
    brokerUrl: 'mqtt://127.0.0.1:1', exchangeUrl: 'https://idmq.test/v2/tokens/exchange', getToken: async () => 'a.b.c',
    clock, fetch, random: () => 0, refreshBefore: 20, inPlaceRefresh: false,
    onTokenRefreshed: (e) => events.push(['refreshed', e]), onTokenExpiring: (e) => events.push(['expiring', e]),
    onTokenError: (e) => events.push(['tokenError', e.code]), onAuthError: (e) => events.push(['authError', e.code]),
    ...extra,
  });
  // A connected MQTT.js stand-in: the loop only reads options and connected, and may call reconnect/end.
  const client = new EventEmitter();
  Object.assign(client, { connected: true, options: { protocolVersion: 5, properties: {} }, reconnects: 0, ended: false });
  client.reconnect = () => { client.reconnects++; };
  client.end = () => { client.ended = true; };
  s.client = client;
  return { s, client, events };
}

test('refreshes refreshBefore seconds ahead of expiry, every lifetime', async () => {
  const clock = fakeClock();
  const ex = fakeExchange(clock, [{ ttl: 60 }, { ttl: 60 }, { ttl: 60 }, { ttl: 60 }]);
  const { s, client, events } = sessionWith(clock, ex.fetch);
  s.creds = await s.obtain();
  s.scheduleRefresh();
  assert.deepEqual(clock.pending(), [40_000]);
  await clock.advance(39_999);
  assert.equal(ex.calls.length, 1, 'refreshed early');
  await clock.advance(1);
  assert.equal(ex.calls.length, 2);
  await clock.advance(40_000 * 2);
  assert.equal(ex.calls.length, 4, 'three refreshes in three lifetimes');
  assert.equal(s.stats.refreshes, 3);
  assert.equal(client.options.properties.authenticationData, 'cred-4', 'reconnects would present the newest credential');
  assert.deepEqual(events.filter((e) => e[0] === 'refreshed').map((e) => e[1].inPlace), [false, false, false]);
  assert.equal(events.filter((e) => e[0] === 'expiring').length, 3);
});

test('a refresh the IdP refuses for now is retried with backoff and reported to onTokenError', async () => {
  const clock = fakeClock();
  const expired = { status: 401, body: { error: 'token_expired', message: 'token expired' } };
  const ex = fakeExchange(clock, [{ ttl: 60 }, expired, expired, { ttl: 60 }]);
  const { s, events } = sessionWith(clock, ex.fetch);
  s.creds = await s.obtain();
  s.scheduleRefresh();
  await clock.advance(40_000);
  assert.deepEqual(events.filter((e) => e[0] === 'tokenError'), [['tokenError', 'token_expired']]);
  assert.deepEqual(clock.pending(), [500], 'first retry after base/2 with random()=0');
  await clock.advance(500);
  assert.deepEqual(clock.pending(), [1000], 'second retry doubles');
  await clock.advance(1000);
  assert.equal(s.stats.refreshes, 1);
  assert.equal(s.attempt, 2);
  assert.equal(events.filter((e) => e[0] === 'authError').length, 0);
});

test('a revoked user gets onAuthError once and the loop stops', async () => {
  const clock = fakeClock();
  const ex = fakeExchange(clock, [{ ttl: 60 }, { status: 401, body: { error: 'token_revoked', message: 'revoked' } }]);
  const { s, client, events } = sessionWith(clock, ex.fetch);
  s.creds = await s.obtain();
  s.scheduleRefresh();
  await clock.advance(40_000);
  assert.deepEqual(events.filter((e) => e[0].endsWith('Error')), [['authError', 'token_revoked']]);
  assert.ok(s.stopped);
  assert.ok(client.ended, 'the connection is closed: the user is no longer signed in');
  assert.deepEqual(clock.pending(), []);
});

test('getToken returning null means signed out: onAuthError', async () => {
  const clock = fakeClock();
  const ex = fakeExchange(clock, [{ ttl: 60 }]);
  let token = 'a.b.c';
  const { s, events } = sessionWith(clock, ex.fetch, { getToken: async () => token });
  s.creds = await s.obtain();
  s.scheduleRefresh();
  token = null;
  await clock.advance(40_000);
  assert.deepEqual(events.filter((e) => e[0].endsWith('Error')), [['authError', 'signed_out']]);
});

test('a set-up error is reported once and not retried', async () => {
  const clock = fakeClock();
  const ex = fakeExchange(clock, [{ ttl: 60 }, { status: 404, body: { error: 'provider_not_found', message: 'x' } }]);
  const { s, events } = sessionWith(clock, ex.fetch, { provider: 'nope' });
  s.creds = await s.obtain();
  s.scheduleRefresh();
  await clock.advance(40_000);
  assert.deepEqual(events.filter((e) => e[0].endsWith('Error')), [['tokenError', 'provider_not_found']]);
  assert.deepEqual(clock.pending(), []);
  assert.deepEqual(ex.calls[1], { token: 'a.b.c', provider: 'nope' });
});
