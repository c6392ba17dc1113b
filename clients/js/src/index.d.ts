// Hand-written types for @idmq/client (the sources are plain ESM JavaScript; `npm run typecheck` checks
// these declarations against MQTT.js's own).
import type { IClientOptions, MqttClient } from 'mqtt';

/** What helps after an error: retry with a fresh token, a new sign-in, or fixing the set-up. */
export declare const Action: { readonly Retry: 'retry'; readonly SignIn: 'sign_in'; readonly Config: 'config' };
export type Action = (typeof Action)[keyof typeof Action];

/** idmq's stable codes: the exchange endpoint's `error` values and CONNACK/DISCONNECT reason names. */
export type IdmqErrorCode =
  | 'invalid_request' | 'provider_not_found' | 'issuer_mismatch' | 'token_expired' | 'token_not_yet_valid'
  | 'invalid_signature' | 'invalid_audience' | 'missing_claim' | 'unauthorized' | 'rate_limited'
  | 'provider_unavailable' | 'token_revoked' | 'exchange_unavailable' | 'internal_error' | 'invalid_token'
  | 'not_authorized' | 'bad_username_or_password' | 'bad_auth_method' | 'username_mismatch' | 'client_id_taken'
  | 'server_unavailable' | 'server_busy' | 'maximum_connect_time' | 'administrative_action' | 'banned'
  | 'network_error' | 'token_source_failed' | 'signed_out' | 'malformed'
  | (string & {});

export declare class IdmqError extends Error {
  readonly name: 'IdmqError';
  readonly code: IdmqErrorCode;
  readonly action: Action;
  /** HTTP status, for errors of the exchange endpoint. */
  readonly status?: number;
  /** MQTT reason code, for a refusing CONNACK or a DISCONNECT. */
  readonly reasonCode?: number;
  /** Seconds from the endpoint's Retry-After. */
  readonly retryAfter?: number;
  readonly source?: 'getToken' | 'exchange' | 'connack' | 'disconnect' | 'connect';
  /** Only a new sign-in helps: the SDK called onAuthError and stopped. */
  readonly signInRequired: boolean;
  /** A fresh token may help: the SDK called onTokenError and retries with backoff. */
  readonly retryable: boolean;
  constructor(code: string, message: string, extra?: { status?: number; reasonCode?: number; retryAfter?: number; source?: string; cause?: unknown });
}

export interface TokenRefreshedEvent { expiresAt: Date; /** false: refreshed by reconnecting on the persistent session */ inPlace: boolean }
export interface TokenExpiringEvent { expiresAt: Date; /** seconds */ expiresIn: number }

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export interface ConnectWithTokenOptions {
  /** mqtt://, mqtts://, ws:// or wss:// URL of the broker (browsers: ws/wss only). */
  brokerUrl: string;
  /** idmq's /v2/tokens/exchange. Without it the IdP token itself is the MQTT password. */
  exchangeUrl?: string;
  /** A configured provider's name, sent to the exchange. */
  provider?: string;
  /** Called at connect and at every refresh; resolve null/undefined when the user is signed out. */
  getToken: () => string | null | undefined | Promise<string | null | undefined>;
  /** Extra headers for the exchange request, e.g. a backend's `Authorization: Bearer <api key>`. */
  exchangeHeaders?: Record<string, string>;
  /** Without exchangeUrl: the MQTT username (default: the token's email, else sub). */
  username?: string;
  /** Default true. */
  autoRefresh?: boolean;
  /** Seconds before expiry to refresh (default 60; at most half a shorter lifetime). */
  refreshBefore?: number;
  /** Default: the client_id the exchange suggests. Keep it stable for a persistent session. */
  clientId?: string;
  /** Default false: a persistent session, so a reconnect loses no QoS 1 message. */
  clean?: boolean;
  /** MQTT 5 Session Expiry Interval in seconds for clean: false (default 3600). */
  sessionExpiryInterval?: number;
  /** 5 (default) refreshes in place; 4 (MQTT 3.1.1) refreshes by reconnecting. */
  protocolVersion?: 4 | 5;
  /** Default true; false always refreshes by reconnecting. */
  inPlaceRefresh?: boolean;
  /** Milliseconds to wait for the broker's AUTH answer before falling back to reconnecting (default 10000). */
  authTimeout?: number;
  /** Retry backoff in milliseconds (default base 1000, max 30000, with jitter). */
  backoff?: { base?: number; max?: number };
  onTokenRefreshed?: (e: TokenRefreshedEvent) => void;
  onTokenExpiring?: (e: TokenExpiringEvent) => void;
  onTokenError?: (err: IdmqError) => void;
  onAuthError?: (err: IdmqError) => void;
  /** Passed to MQTT.js; the SDK sets protocolVersion, clientId, clean, username, password, reconnectPeriod. */
  mqttOptions?: IClientOptions;
  /** Tests: the clock, random source and fetch to use. */
  clock?: Clock;
  random?: () => number;
  fetch?: typeof fetch;
}

export interface IdmqClient extends MqttClient {
  /** The MQTT username of the signed-in user, e.g. for `users/${client.username}/#`. */
  readonly username: string;
  readonly credentialsExpireAt: Date;
  readonly refreshStats: { refreshes: number; inPlace: number; reconnects: number };
  /** Refresh now, e.g. on Supabase's TOKEN_REFRESHED or a Clerk session change. */
  refreshToken(): Promise<void>;
  /** Stops refreshing and disconnects; endSession: true also ends the persistent MQTT 5 session. */
  signOut(options?: { endSession?: boolean }): Promise<void>;
  on(event: 'tokenRefreshed', cb: (e: TokenRefreshedEvent) => void): this;
  on(event: 'tokenExpiring', cb: (e: TokenExpiringEvent) => void): this;
  on(event: 'tokenError' | 'authError', cb: (err: IdmqError) => void): this;
  on(...args: Parameters<MqttClient['on']>): this;
}

export declare function connectWithToken(options: ConnectWithTokenOptions): Promise<IdmqClient>;

export declare function exchangeError(status: number, body: unknown, retryAfter?: string | null): IdmqError;
export declare function reasonCodeError(reasonCode: number, reasonString?: string,
  options?: { protocolVersion?: number; source?: string }): IdmqError;
export declare function actionOf(code: string): Action;
export declare function refreshDelay(expiresAt: number, issuedAt: number, refreshBefore: number, now: number): number;
export declare function backoffDelay(attempt: number,
  options?: { base?: number; max?: number; random?: () => number; retryAfter?: number }): number;
export declare const systemClock: Clock;
export declare const AUTH_METHOD: 'JWT';
