// Compiled by `npm run typecheck`, never run: the README's usage must type-check against index.d.ts.
import { connectWithToken, IdmqError, type IdmqClient } from '@idmq/client';

export async function usage(getToken: () => Promise<string | null>): Promise<IdmqClient> {
  const client = await connectWithToken({
    brokerUrl: 'wss://mqtt.example.com:8084/mqtt',
    exchangeUrl: 'https://mqtt.example.com:8080/v2/tokens/exchange',
    provider: 'clerk',
    getToken,
    refreshBefore: 60,
    onTokenRefreshed: (e) => console.log('refreshed', e.inPlace, e.expiresAt.toISOString()),
    onTokenError: (err: IdmqError) => console.warn(err.code, err.retryable),
    onAuthError: (err) => console.warn('sign in again:', err.code),
  });
  client.subscribe(`users/${client.username}/#`, { qos: 1 });
  client.on('message', (topic: string, payload: Buffer) => console.log(topic, payload.toString()));
  client.on('authError', (err) => console.log(err.signInRequired));
  await client.signOut({ endSession: true });
  return client;
}
