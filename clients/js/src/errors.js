// Typed errors with idmq's stable codes. One place maps what the exchange endpoint, a CONNACK or a DISCONNECT
// said to a code and to what the app should do about it.

/** What helps: 'retry' (back off, get a fresh token, try again), 'sign_in' (the user must sign in again),
 * 'config' (neither helps: the broker or the app is set up wrong). */
export const Action = Object.freeze({ Retry: 'retry', SignIn: 'sign_in', Config: 'config' });

// The exchange table's `error` values, plus the broker's CONNACK/DISCONNECT reason names.
const ACTIONS = {
  // Transient, or fixed by a fresh IdP token.
  token_expired: Action.Retry,
  token_not_yet_valid: Action.Retry,
  rate_limited: Action.Retry,
  provider_unavailable: Action.Retry,
  keys_unavailable: Action.Retry,
  exchange_unavailable: Action.Retry,
  internal_error: Action.Retry,
  server_unavailable: Action.Retry,
  server_busy: Action.Retry,
  network_error: Action.Retry,
  token_source_failed: Action.Retry,
  maximum_connect_time: Action.Retry,
  // Only a new sign-in helps.
  token_revoked: Action.SignIn,
  not_authorized: Action.SignIn,
  bad_username_or_password: Action.SignIn,
  username_mismatch: Action.SignIn,
  invalid_signature: Action.SignIn,
  invalid_token: Action.SignIn,
  signed_out: Action.SignIn,
  administrative_action: Action.SignIn,
  // Set-up errors: say so, do not loop.
  invalid_request: Action.Config,
  provider_not_found: Action.Config,
  issuer_mismatch: Action.Config,
  invalid_audience: Action.Config,
  invalid_azp: Action.Config,
  missing_claim: Action.Config,
  unauthorized: Action.Config,
  bad_auth_method: Action.Config,
  malformed: Action.Config,
  token_too_large: Action.Config,
  alg_not_allowed: Action.Config,
  unknown_kid: Action.SignIn,
  client_id_taken: Action.Config,
  missing_credential: Action.Config,
  cors_blocked: Action.Config,
};

// MQTT 5 reason codes idmq sends in CONNACK and DISCONNECT [MQTT-3.2.2.2, 3.14.2.1].
const REASON_CODES = {
  0x80: 'unspecified_error',
  0x82: 'protocol_error',
  0x85: 'client_id_taken',
  0x86: 'bad_username_or_password',
  0x87: 'not_authorized',
  0x88: 'server_unavailable',
  0x89: 'server_busy',
  0x8a: 'banned',
  0x8c: 'bad_auth_method',
  0x8e: 'session_taken_over',
  0x97: 'quota_exceeded',
  0x98: 'administrative_action',
  0x9f: 'connection_rate_exceeded',
  0xa0: 'maximum_connect_time',
};

// MQTT 3.1.1 CONNACK return codes [MQTT-3.2.2.3].
const V3_RETURN_CODES = {
  1: 'unsupported_protocol_version',
  2: 'client_id_taken',
  3: 'server_unavailable',
  4: 'bad_username_or_password',
  5: 'not_authorized',
};

// idmq's reason strings that are not a stable code themselves.
const REASON_STRINGS = { 'token expired': 'token_expired', 'credentials revoked': 'token_revoked' };

export class IdmqError extends Error {
  /**
   * @param {string} code stable code, e.g. 'token_expired'
   * @param {string} message human-readable; never contains a token
   * @param {{status?: number, reasonCode?: number, retryAfter?: number, source?: string, cause?: unknown}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(`idmq: ${code}: ${message}`, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'IdmqError';
    this.code = code;
    this.action = ACTIONS[code] ?? Action.Retry;
    this.status = extra.status;
    this.reasonCode = extra.reasonCode;
    this.retryAfter = extra.retryAfter;
    this.source = extra.source;
  }

  /** True when only a new sign-in can help: the SDK calls onAuthError and stops. */
  get signInRequired() { return this.action === Action.SignIn; }

  /** True when trying again with a fresh token can help: the SDK calls onTokenError and retries. */
  get retryable() { return this.action === Action.Retry; }
}

/** An error for an HTTP answer of the exchange endpoint. */
export function exchangeError(status, body, retryAfterHeader) {
  const code = typeof body?.error === 'string' && body.error ? body.error : httpFallback(status);
  const detail = typeof body?.error_description === 'string' ? body.error_description
    : typeof body?.message === 'string' ? body.message : `HTTP ${status}`;
  const retryAfter = Number.parseInt(retryAfterHeader ?? '', 10);
  return new IdmqError(code, detail, {
    status, source: 'exchange', retryAfter: Number.isFinite(retryAfter) ? retryAfter : undefined,
  });
}

function httpFallback(status) {
  if (status === 429) return 'rate_limited';
  if (status >= 500) return 'provider_unavailable';
  if (status === 401 || status === 403) return 'unauthorized';
  return 'invalid_request';
}

/**
 * An error for a refusing CONNACK or a server DISCONNECT. idmq puts the stable reason name in the Reason
 * String (e.g. 'token_expired'); a code from a broker that does not is named after the reason code.
 */
export function reasonCodeError(reasonCode, reasonString, { protocolVersion = 5, source = 'connack' } = {}) {
  let code = REASON_STRINGS[reasonString] ?? (reasonString && reasonString in ACTIONS ? reasonString : undefined);
  if (!code) {
    const table = protocolVersion === 5 ? REASON_CODES : V3_RETURN_CODES;
    code = table[reasonCode] ?? `reason_0x${reasonCode.toString(16).padStart(2, '0')}`;
  }
  const hex = `0x${reasonCode.toString(16).padStart(2, '0').toUpperCase()}`;
  return new IdmqError(code, `${source} ${hex}${reasonString ? ` (${reasonString})` : ''}`, { reasonCode, source });
}

/** The action for a code, for apps that keep their own table. */
export function actionOf(code) { return ACTIONS[code] ?? Action.Retry; }
