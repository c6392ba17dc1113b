// Package authhook is idmq's authentication: a mochi-mqtt hook that turns the JWT a client presents at
// CONNECT into an Identity, and refuses everything else with a precise CONNACK reason code. It never lets in
// a client it has not verified; the ACL (package aclhook) then decides per topic from that Identity.
//
// # What it verifies
//
// The credential is the CONNECT password, or, for MQTT 5 with Authentication Method JWT, OAUTH2-JWT or
// CUSTOM-JWT, the Authentication Data. It must be a signed JWT of at most 16 KiB from a configured provider:
//
//   - an identity provider (types oidc, clerk, auth0, supabase, firebase), selected by the token's iss, which
//     must equal the configured issuer exactly, with keys from its JWKS (found through OpenID discovery, or
//     jwks_url);
//   - the local provider, idmq's own issuer: tokens from `idmq token` and the credentials the HTTP token
//     exchange mints (see LocalIssuer), verified offline by any node holding the same signing key;
//   - a devices provider: the self-signed, iss-less tokens of Cloud IoT Core / ClearBlade devices, checked
//     against keys registered per device; the client id names the device (see devices.go).
//
// Cheap checks come before expensive ones: size, issuer, algorithm (never "none"; HMAC only for a supabase
// jwt_secret), kid, then the signature, then exp, nbf and iat (with Config.Leeway), audiences, azp and the
// claims the provider maps. The username comes from a claim, escaped so it is safe in topics (%u), and the
// CONNECT username may only repeat it or be a placeholder. A verified token is cached until it expires, so a
// reconnect costs no signature; revocations (Hook.Revoke) are checked on every use, cached or not.
//
// After CONNECT the hook keeps watching: a client whose credential expires is disconnected (MQTT 5: 0xA0),
// MQTT 5 re-authentication (an AUTH packet with a fresh token) replaces the Identity, and Hook.Disconnect
// ends a session on request.
//
// # Where to start
//
// Config is the `auth:` section of idmq's YAML file, one ProviderConfig per provider; Config.Validate names
// every problem by field (FieldError). New provisions the providers (key sets fetched in the background, so
// it never waits for an identity provider) and returns the Hook; add it to a mochi server with AddHook(h,
// nil), beside an ACL hook that denies by default, never an allow-all one, since mochi ORs auth results.
// Hook.Identity gives a connected client's Identity; Hook.Verify checks a token outside CONNECT; Hook.Stop
// (which mochi calls when the server closes) ends the background work. A refusal is an *Error whose Reason
// is stable: it is the reason label of the idmq_auth_total metric and the error code of the token exchange.
package authhook
