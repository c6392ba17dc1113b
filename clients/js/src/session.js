// A signed-in user's connection: credentials in, refreshed before expiry (in place where MQTT 5 allows,
// else by reconnecting on the persistent session), errors sorted into "retry" and "sign in again".
import mqtt from 'mqtt';

import { AUTH_METHOD, reauthenticate, supportsInPlaceRefresh } from './auth.js';
import { obtainCredentials } from './credentials.js';
import { IdmqError, reasonCodeError } from './errors.js';
import { backoffDelay, refreshDelay, systemClock } from './schedule.js';

const DEFAULT_SESSION_EXPIRY = 3600; // seconds a persistent MQTT 5 session outlives its connection

export class Session {
  constructor(opts) {
    if (!opts || typeof opts.brokerUrl !== 'string') throw new TypeError('idmq: connectWithToken needs brokerUrl');
    if (typeof opts.getToken !== 'function') throw new TypeError('idmq: connectWithToken needs getToken, a function');
    this.opts = {
      autoRefresh: true, refreshBefore: 60, clean: false, protocolVersion: 5, inPlaceRefresh: true,
      authTimeout: 10_000, sessionExpiryInterval: DEFAULT_SESSION_EXPIRY, backoff: {}, ...opts,
    };
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    this.fetch = opts.fetch ?? ((...a) => globalThis.fetch(...a));
    this.creds = null;
    this.client = null;
    this.stopped = false;
    this.refreshTimer = null;
    this.reconnectTimer = null;
    this.attempt = 0;
    this.plannedClose = false;
    this.lastServerReason = null; // the refusing CONNACK or the DISCONNECT of the connection that just ended
    this.stats = { refreshes: 0, inPlace: 0, reconnects: 0 };
  }

  obtain() {
    const o = this.opts;
    return obtainCredentials({
      getToken: o.getToken, exchangeUrl: o.exchangeUrl, provider: o.provider, exchangeHeaders: o.exchangeHeaders,
      username: o.username, fetch: this.fetch, now: this.clock.now,
    });
  }

  mqttOptions(creds) {
    const o = this.opts;
    const v5 = o.protocolVersion === 5;
    const properties = { ...o.mqttOptions?.properties };
    if (v5) {
      properties.authenticationMethod = AUTH_METHOD;
      properties.authenticationData = creds.password;
      if (!o.clean && properties.sessionExpiryInterval === undefined) properties.sessionExpiryInterval = o.sessionExpiryInterval;
    }
    return {
      ...o.mqttOptions,
      protocolVersion: o.protocolVersion,
      clientId: o.clientId ?? creds.clientId,
      clean: o.clean,
      username: creds.username,
      // MQTT 5 sends the token once, as Authentication Data; 3.1.1 has only the password field.
      ...(v5 ? {} : { password: creds.password }),
      properties,
      reconnectPeriod: 0, // reconnects are ours: MQTT.js would reconnect with the expired credentials
      manualConnect: true,
      // Stores that survive end(): MQTT.js's default ones drop their unacknowledged packets when closed, and
      // a refresh by reconnecting closes the connection with end() and then resumes with the same stores.
      incomingStore: o.mqttOptions?.incomingStore ?? new mqtt.Store({ clean: false }),
      outgoingStore: o.mqttOptions?.outgoingStore ?? new mqtt.Store({ clean: false }),
    };
  }

  async start() {
    this.creds = await this.obtain();
    const client = mqtt.connect(this.opts.brokerUrl, this.mqttOptions(this.creds));
    this.client = client;
    decorate(client, this);
    client.on('packetreceive', (p) => {
      if ((p.cmd === 'connack' && p.reasonCode) || p.cmd === 'disconnect') this.lastServerReason = p;
    });
    client.on('connect', () => { this.attempt = 0; this.lastServerReason = null; this.scheduleRefresh(); });
    client.on('close', () => this.onClose());
    client.on('error', () => { /* refusals arrive as 'close' after the CONNACK, handled there */ });
    this.starting = true;
    await new Promise((resolve, reject) => {
      const onConnect = () => { this.starting = false; client.removeListener('close', onClose); resolve(); };
      const onClose = () => {
        client.removeListener('connect', onConnect);
        this.stop();
        reject(this.closeError() ?? new IdmqError('network_error', `could not connect to ${this.opts.brokerUrl}`, { source: 'connect' }));
      };
      client.once('connect', onConnect);
      client.once('close', onClose);
      client.connect();
    });
    return client;
  }

  closeError() {
    const p = this.lastServerReason;
    if (!p) return null;
    const rc = p.cmd === 'connack' ? (p.reasonCode ?? p.returnCode) : p.reasonCode;
    return reasonCodeError(rc, p.properties?.reasonString, { protocolVersion: this.opts.protocolVersion, source: p.cmd });
  }

  scheduleRefresh() {
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (this.stopped || !this.opts.autoRefresh || !Number.isFinite(this.creds.expiresAt)) return;
    const delay = refreshDelay(this.creds.expiresAt, this.creds.issuedAt, this.opts.refreshBefore, this.clock.now());
    this.refreshTimer = this.clock.setTimeout(() => { this.refreshTimer = null; this.refresh().catch(() => {}); }, delay);
  }

  /** Gets new credentials and applies them; failures go to the callbacks, never to the caller. */
  async refresh() {
    if (this.stopped) return;
    this.emit('tokenExpiring', { expiresAt: new Date(this.creds.expiresAt), expiresIn: Math.round((this.creds.expiresAt - this.clock.now()) / 1000) });
    let creds;
    try {
      creds = await this.obtain();
    } catch (err) {
      this.onRefreshFailure(err);
      return;
    }
    if (this.stopped) return;
    const client = this.client;
    if (client.connected && this.opts.inPlaceRefresh && supportsInPlaceRefresh(client)) {
      try {
        await reauthenticate(client, creds.password, { timeoutMs: this.opts.authTimeout, clock: this.clock });
        this.adopt(creds);
        this.stats.inPlace++;
        this.emit('tokenRefreshed', { expiresAt: new Date(creds.expiresAt), inPlace: true });
        this.scheduleRefresh();
        return;
      } catch (why) {
        if (why.kind === 'disconnect') return; // onClose sorts the broker's reason out and reconnects or stops
        if (why.kind !== 'timeout') return;
        this.opts.inPlaceRefresh = false; // the broker ignores AUTH: reconnect from now on
      }
    }
    this.adopt(creds);
    this.emit('tokenRefreshed', { expiresAt: new Date(creds.expiresAt), inPlace: false });
    if (client.connected) this.reconnect();
    this.scheduleRefresh();
  }

  adopt(creds) {
    this.creds = creds;
    this.stats.refreshes++;
    const o = this.client.options;
    o.username = creds.username;
    if (o.protocolVersion === 5) o.properties = { ...o.properties, authenticationData: creds.password };
    else o.password = creds.password;
  }

  onRefreshFailure(err) {
    if (!(err instanceof IdmqError)) err = new IdmqError('internal_error', String(err?.message ?? err), { cause: err });
    if (err.signInRequired) {
      this.emit('authError', err);
      this.stop();
      this.client?.end(true);
      return;
    }
    this.emit('tokenError', err);
    if (!err.retryable) return; // a set-up error: retrying changes nothing; the connection lives until expiry
    const delay = backoffDelay(this.attempt++, { ...this.opts.backoff, random: this.random, retryAfter: err.retryAfter });
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = this.clock.setTimeout(() => { this.refreshTimer = null; this.refresh().catch(() => {}); }, delay);
  }

  onClose() {
    if (this.plannedClose) { this.plannedClose = false; return; } // reconnect() closed it to connect anew
    if (this.starting || this.stopped || this.reconnectTimer) return; // start() rejects instead
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const err = this.closeError();
    // A DISCONNECT for revocation (0x98) or a refused refresh (0x87) is answered by asking for new
    // credentials: the exchange then says whether the user must sign in again. A refusing CONNACK or any
    // other final code (bad_auth_method, client_id_taken...) gives the same answer however often it is retried.
    const askAgain = err?.source === 'disconnect' && (err.code === 'administrative_action' || err.code === 'not_authorized');
    if (err && !err.retryable && !askAgain) {
      this.emit(err.signInRequired ? 'authError' : 'tokenError', err);
      this.stop();
      return;
    }
    const delay = backoffDelay(this.attempt++, { ...this.opts.backoff, random: this.random });
    this.reconnectTimer = this.clock.setTimeout(() => { this.reconnectTimer = null; this.reconnectWithFreshCredentials(err).catch(() => {}); }, delay);
  }

  // After an unplanned close: new credentials when the old ones were refused or are about to end, so the
  // persistent session resumes with its queued messages.
  async reconnectWithFreshCredentials(reason) {
    if (this.stopped) return;
    const soon = this.creds.expiresAt - this.clock.now() < Math.min(this.opts.refreshBefore * 1000, (this.creds.expiresAt - this.creds.issuedAt) / 2);
    if (reason || soon) {
      try {
        this.adopt(await this.obtain());
        this.emit('tokenRefreshed', { expiresAt: new Date(this.creds.expiresAt), inPlace: false });
      } catch (err) {
        const e = err instanceof IdmqError ? err : new IdmqError('internal_error', String(err?.message ?? err), { cause: err });
        if (e.signInRequired) { this.emit('authError', e); this.stop(); return; }
        this.emit('tokenError', e);
        if (!e.retryable) { this.stop(); return; }
        this.onClose();
        return;
      }
    }
    if (this.stopped) return;
    this.reconnect();
  }

  reconnect() {
    this.stats.reconnects++;
    const client = this.client;
    // Keeping the stores keeps unacknowledged QoS 1/2 messages: MQTT.js resends them on the resumed session.
    const stores = { incomingStore: client.incomingStore, outgoingStore: client.outgoingStore };
    if (!client.connected) {
      client.reconnect(stores);
      return;
    }
    // end(false) waits for in-flight messages to be acknowledged, then sends DISCONNECT (no Will).
    this.plannedClose = true;
    client.end(false, {}, () => { if (!this.stopped) client.reconnect(stores); });
  }

  emit(event, arg) {
    const cb = this.opts[`on${event[0].toUpperCase()}${event.slice(1)}`];
    if (typeof cb === 'function') {
      try { cb(arg); } catch { /* an app callback's bug must not stop refreshing */ }
    }
    this.client?.emit(event, arg);
  }

  stop() {
    this.stopped = true;
    this.clock.clearTimeout(this.refreshTimer);
    this.clock.clearTimeout(this.reconnectTimer);
    this.refreshTimer = this.reconnectTimer = null;
  }

  async signOut({ endSession = false } = {}) {
    this.stop();
    const client = this.client;
    if (!client) return;
    const opts = endSession && client.options.protocolVersion === 5 ? { properties: { sessionExpiryInterval: 0 } } : {};
    await new Promise((resolve) => client.end(false, opts, () => resolve()));
  }
}

// The MQTT.js client is the SDK's client: everything MQTT.js offers stays, idmq's additions are added.
function decorate(client, session) {
  Object.defineProperties(client, {
    username: { get: () => session.creds.username, enumerable: true },
    credentialsExpireAt: { get: () => new Date(session.creds.expiresAt), enumerable: true },
    refreshStats: { get: () => ({ ...session.stats }), enumerable: true },
    refreshToken: { value: () => session.refresh() },
    signOut: { value: (o) => session.signOut(o) },
  });
}
