// Timing decisions, pure so they are tested with an injected clock and random source.

/** The real clock; tests pass their own with the same shape. */
export const systemClock = Object.freeze({
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
});

/**
 * Milliseconds from now until the credential should be refreshed: refreshBefore seconds ahead of expiry, but
 * never later than the middle of a lifetime shorter than that (a 60 s credential with refreshBefore 60 would
 * otherwise refresh at once, in a loop).
 * @param {number} expiresAt epoch ms
 * @param {number} issuedAt epoch ms when the credential was obtained
 * @param {number} refreshBefore seconds
 * @param {number} now epoch ms
 */
export function refreshDelay(expiresAt, issuedAt, refreshBefore, now) {
  const lifetime = expiresAt - issuedAt;
  let lead = refreshBefore * 1000;
  if (lead >= lifetime) lead = lifetime / 2;
  return Math.max(0, Math.round(expiresAt - lead - now));
}

/**
 * Backoff before retry number attempt (0-based): exponential from base to max with equal jitter (half fixed,
 * half random), so a fleet that lost its broker together does not come back in lockstep, and no retry is
 * immediate. A server's Retry-After (seconds) is a floor.
 */
export function backoffDelay(attempt, { base = 1000, max = 30_000, random = Math.random, retryAfter } = {}) {
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  const d = cap / 2 + random() * (cap / 2);
  const floor = retryAfter ? retryAfter * 1000 : 0;
  return Math.round(Math.max(d, floor));
}
