// Next.js App Router route handler: save as app/api/mqtt-credentials/route.js (next to exchange.mjs in lib/).
// The browser calls its own backend (same origin, no CORS), sending the IdP session token it already has:
//   const res = await fetch('/api/mqtt-credentials', { method: 'POST',
//     headers: { Authorization: `Bearer ${await getIdPToken()}` } });
// idmq verifies the IdP token itself, so this route only forwards it with the API key the browser must not see.
// With Clerk you can instead take the token server-side: `const { getToken } = await auth(); await getToken()`.
import { ExchangeError, exchangeForMqtt } from '../../../lib/exchange.mjs';

export async function POST(request) {
  const idpToken = request.headers.get('authorization')?.match(/^Bearer (.+)$/i)?.[1];
  if (!idpToken) return Response.json({ error: 'invalid_request', message: 'Authorization: Bearer <IdP token> is required' }, { status: 400 });
  try {
    const creds = await exchangeForMqtt(idpToken);
    return Response.json(creds, { headers: { 'Cache-Control': 'no-store' } });
  } catch (err) {
    if (err instanceof ExchangeError) {
      // Pass idmq's 4xx through (the user's token is expired, wrong audience, ...); hide its 5xx details.
      const status = err.status < 500 ? err.status : 502;
      return Response.json({ error: err.code, message: status === 502 ? 'MQTT credentials unavailable' : err.detail }, { status });
    }
    return Response.json({ error: 'unavailable', message: 'MQTT credentials unavailable' }, { status: 502 });
  }
}
