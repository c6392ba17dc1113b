import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoffDelay, refreshDelay } from '../src/index.js';

test('refresh happens refreshBefore seconds ahead of expiry', () => {
  const issued = 1_000_000;
  assert.equal(refreshDelay(issued + 3600_000, issued, 60, issued), 3540_000);
  assert.equal(refreshDelay(issued + 3600_000, issued, 60, issued + 3000_000), 540_000);
});

test('a lifetime no longer than refreshBefore refreshes at its middle, not in a loop', () => {
  const issued = 5_000;
  assert.equal(refreshDelay(issued + 60_000, issued, 60, issued), 30_000);
  assert.equal(refreshDelay(issued + 60_000, issued, 300, issued), 30_000);
});

test('an overdue refresh is due now, never in the past', () => {
  assert.equal(refreshDelay(10_000, 0, 5, 20_000), 0);
});

test('backoff doubles to its cap with equal jitter', () => {
  const lo = () => 0;
  const hi = () => 0.999999;
  assert.equal(backoffDelay(0, { random: lo }), 500);
  assert.equal(backoffDelay(0, { random: hi }), 1000);
  assert.equal(backoffDelay(3, { random: lo }), 4000);
  assert.equal(backoffDelay(3, { random: hi }), 8000);
  assert.equal(backoffDelay(10, { random: lo }), 15_000);
  assert.equal(backoffDelay(100, { random: hi }), 30_000);
});

test('jitter spreads a fleet: 1000 clients at attempt 4 do not retry together', () => {
  const delays = new Set();
  for (let i = 0; i < 1000; i++) delays.add(backoffDelay(4));
  assert.ok(delays.size > 500, `only ${delays.size} distinct delays`);
  for (const d of delays) assert.ok(d >= 8000 && d <= 16_000, `delay ${d}`);
});

test("a server's Retry-After is a floor", () => {
  assert.equal(backoffDelay(0, { random: () => 0, retryAfter: 7 }), 7000);
});
