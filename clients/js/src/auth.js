// MQTT 5 re-authentication over MQTT.js, which has no public API for it (mqttjs/MQTT.js #1795).
//
// What MQTT.js 5 does have, and what this file relies on:
// - CONNECT carries options.properties.authenticationMethod/authenticationData, read again at every
//   (re)connect, and the client remembers the method (_authenticationMethod) so it accepts the broker's
//   AUTH 0x00 answer instead of treating it as a protocol error.
// - _sendPacket({cmd: 'auth', ...}) writes the packet straight to the stream (AUTH is neither queued nor
//   stored), and mqtt-packet encodes AUTH with its properties; a string is valid Binary Data there, which
//   spares the browser a Buffer polyfill.
// - every received packet is emitted as 'packetreceive', so the AUTH 0x00 answer (or the DISCONNECT that
//   refuses the token) is observed without replacing any handler.
// If a future MQTT.js renames _sendPacket, supportsInPlaceRefresh says so and the SDK falls back to
// reconnecting with the new credentials.

export const AUTH_METHOD = 'JWT';
const REAUTHENTICATE = 0x19; // [MQTT-3.15.2.1]

export function supportsInPlaceRefresh(client) {
  return client.options.protocolVersion === 5 && typeof client._sendPacket === 'function';
}

/**
 * Sends AUTH 0x19 with token and resolves when the broker answers AUTH 0x00. Rejects with the DISCONNECT
 * packet's reason when the broker refuses, with 'closed' when the connection ends, or 'timeout'.
 */
export function reauthenticate(client, token, { timeoutMs, clock }) {
  return new Promise((resolve, reject) => {
    let timer;
    const done = (fn, arg) => {
      clock.clearTimeout(timer);
      client.removeListener('packetreceive', onPacket);
      client.removeListener('close', onClose);
      fn(arg);
    };
    const onPacket = (packet) => {
      if (packet.cmd === 'auth' && packet.reasonCode === 0) done(resolve);
      else if (packet.cmd === 'disconnect') done(reject, { kind: 'disconnect', packet });
    };
    const onClose = () => done(reject, { kind: 'closed' });
    client.on('packetreceive', onPacket);
    client.on('close', onClose);
    timer = clock.setTimeout(() => done(reject, { kind: 'timeout' }), timeoutMs);
    client._sendPacket({
      cmd: 'auth',
      reasonCode: REAUTHENTICATE,
      properties: { authenticationMethod: AUTH_METHOD, authenticationData: token },
    }, (err) => { if (err) done(reject, { kind: 'write', err }); });
  });
}
