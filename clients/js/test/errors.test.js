import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Action, IdmqError, exchangeError, reasonCodeError } from '../src/index.js';

test('exchange errors keep the endpoint code and sort it into retry, sign-in or config', () => {
  const rows = [
    { status: 401, error: 'token_expired', action: Action.Retry },
    { status: 401, error: 'token_revoked', action: Action.SignIn },
    { status: 401, error: 'invalid_signature', action: Action.SignIn },
    { status: 404, error: 'provider_not_found', action: Action.Config },
    { status: 401, error: 'issuer_mismatch', action: Action.Config },
    { status: 503, error: 'provider_unavailable', action: Action.Retry },
    { status: 429, error: 'rate_limited', action: Action.Retry },
  ];
  for (const r of rows) {
    const e = exchangeError(r.status, { error: r.error, message: 'detail' });
    assert.ok(e instanceof IdmqError);
    assert.equal(e.code, r.error);
    assert.equal(e.status, r.status);
    assert.equal(e.action, r.action, r.error);
    assert.equal(e.signInRequired, r.action === Action.SignIn, r.error);
    assert.equal(e.retryable, r.action === Action.Retry, r.error);
  }
});

test('an exchange answer without a JSON body is named after its status', () => {
  assert.equal(exchangeError(429, null, '7').code, 'rate_limited');
  assert.equal(exchangeError(429, null, '7').retryAfter, 7);
  assert.equal(exchangeError(502, null).code, 'provider_unavailable');
  assert.equal(exchangeError(401, null).code, 'unauthorized');
});

test('CONNACK and DISCONNECT codes: the Reason String names idmq reasons, else the code does', () => {
  const rows = [
    { rc: 0x86, rs: 'token_expired', code: 'token_expired' },
    { rc: 0xa0, rs: 'token expired', code: 'token_expired' },
    { rc: 0x98, rs: 'credentials revoked', code: 'token_revoked', action: Action.SignIn },
    { rc: 0x87, rs: 'username_mismatch', code: 'username_mismatch' },
    { rc: 0x87, rs: undefined, code: 'not_authorized' },
    { rc: 0x8c, rs: 'bad_auth_method', code: 'bad_auth_method', action: Action.Config },
    { rc: 0x8c, rs: undefined, code: 'bad_auth_method' },
    { rc: 0x88, rs: undefined, code: 'server_unavailable', action: Action.Retry },
    { rc: 0xa0, rs: undefined, code: 'maximum_connect_time', action: Action.Retry },
    { rc: 0x99, rs: undefined, code: 'reason_0x99' },
  ];
  for (const r of rows) {
    const e = reasonCodeError(r.rc, r.rs, { source: 'disconnect' });
    assert.equal(e.code, r.code, `0x${r.rc.toString(16)} ${r.rs}`);
    assert.equal(e.reasonCode, r.rc);
    if (r.action) assert.equal(e.action, r.action, r.code);
  }
  assert.equal(reasonCodeError(4, undefined, { protocolVersion: 4 }).code, 'bad_username_or_password');
  assert.equal(reasonCodeError(5, undefined, { protocolVersion: 4 }).code, 'not_authorized');
});

test('messages carry the code and never the token', () => {
  const token = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln';
  const e = exchangeError(401, { error: 'token_expired', message: 'token expired' });
  assert.match(e.message, /^idmq: token_expired: /);
  assert.ok(!e.message.includes(token));
});
