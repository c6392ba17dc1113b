// @idmq/client: keeps a signed-in user connected to idmq. See README.md.
import { Session } from './session.js';

export { IdmqError, Action, actionOf, exchangeError, reasonCodeError } from './errors.js';
export { refreshDelay, backoffDelay, systemClock } from './schedule.js';
export { AUTH_METHOD } from './auth.js';

/**
 * Gets MQTT credentials from getToken (exchanged at exchangeUrl when given), connects, and keeps the
 * connection signed in. Resolves once connected; rejects with an IdmqError when that first attempt fails.
 */
export async function connectWithToken(options) {
  return new Session(options).start();
}
