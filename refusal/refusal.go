// Package refusal is the one place where idmq decides what a refused client sees: every way idmq refuses an
// MQTT CONNECT or an MQTT 5 AUTH (re-authentication) is a Kind, and Table maps each Kind to
//
//   - the MQTT 5 CONNACK reason code, and the MQTT 3.1.1 CONNACK return code (or none: the connection is
//     closed without a CONNACK, which 3.1.1 allows when no return code fits [MQTT-3.2.2-6]);
//   - the MQTT 5 DISCONNECT reason code when the refusal ends an established connection (re-authentication);
//   - the Reason String an MQTT 5 client receives (the stable name users search the docs for);
//   - the Prometheus counter the refusal increments, and the slog level it is logged at.
//
// Who refuses, and through which function:
//
//	authhook  OnConnect (credential, username, client id, Authentication Method)   Connack
//	authhook  OnAuthPacket (re-authentication)                                      Disconnect
//	broker    connect rate limit per IP (mqtt.max_connect_rate)                     Connack
//	aclhook   OnConnect, a Will topic the client may not publish to                 Connack
//	cluster   ReadyHook.OnConnect, the node is not connected to its cluster         Connack
//
// A hook never picks a reason code itself: it names the Kind. This package imports only mochi's packets, so
// authhook, aclhook and broker can all use it without importing each other.
//
// The MQTT 3.1.1 codes are chosen here, not by mochi's packets.V5CodesToV3: that table maps 0x86 to 0x05
// (not authorized) instead of 0x04 (bad user name or password), has no entry for 0x87 or 0x8C, and matches
// on the Reason String too, so a code with any other reason text would reach a 3.1.1 client as an MQTT 5
// code. Hooks therefore send the refusal CONNACK themselves, with the code Connack returns.
//
// Refusals mochi makes itself, before or after the hooks, which idmq leaves as they are (mochi v2.7.9):
//
//	maximum clients reached (mqtt.max_clients)        v5 0x89 server busy, v3 0x03
//	protocol version below the minimum                v5 0x84, v3 0x01
//	invalid or too long client identifier             v5 0x85, v3 0x02
//	malformed CONNECT (e.g. Will flag combinations)   v5 0x82, and 0x82 on a 3.1.1 wire too (mochi has no v3 code)
//	3.1.1 persistent session without a client id      0x80 on a 3.1.1 wire; the spec wants 0x02 [MQTT-3.1.3-8]
//	OnConnectAuthenticate false                       v5 0x86, v3 0x05; never reached while authhook runs, as
//	                                                  authhook refuses in OnConnect and admits what it verified
//
// The credential expiring (DISCONNECT 0xA0), revocation and administrators (0x98) end connections that were
// accepted; they are not refusals and live in authhook's expiry.go, revocation.go and the broker's admin API.
package refusal

import "github.com/mochi-mqtt/server/v2/packets"

// Kind names why a CONNECT or AUTH was refused. The credential kinds are authhook's Reason values: the
// `reason` label of idmq_auth_total and the `error` codes of the HTTP token exchange, so never rename one.
type Kind string

// Credential refusals by authhook: the token, its claims, its keys.
const (
	IssuerMismatch    Kind = "issuer_mismatch"
	TokenExpired      Kind = "token_expired"
	TokenNotYetValid  Kind = "token_not_yet_valid"
	InvalidSignature  Kind = "invalid_signature"
	InvalidAudience   Kind = "invalid_audience"
	InvalidAZP        Kind = "invalid_azp"
	MissingClaim      Kind = "missing_claim"
	UnknownKID        Kind = "unknown_kid"
	Malformed         Kind = "malformed"
	TokenTooLarge     Kind = "token_too_large"
	AlgNotAllowed     Kind = "alg_not_allowed"
	KeysUnavailable   Kind = "keys_unavailable"
	UsernameMismatch  Kind = "username_mismatch"
	MissingCredential Kind = "missing_credential"
	ProviderNotFound  Kind = "provider_not_found" // only the HTTP token exchange names a provider
	TokenRevoked      Kind = "token_revoked"

	// Device tokens (provider type devices).
	UnknownDevice   Kind = "unknown_device"    // the client id names no registered device
	DeviceBlocked   Kind = "device_blocked"    // the device is registered with blocked: true
	KeyExpired      Kind = "key_expired"       // every key of the device expired, or the token verifies only with an expired one
	LifetimeTooLong Kind = "lifetime_too_long" // exp - iat exceeds max_lifetime (+ leeway)
	IATSkew         Kind = "iat_skew"          // iat is further from now than iat_skew
	ProjectMismatch Kind = "project_mismatch"  // the client id path names a project no devices provider serves
)

// Refusals by authhook that are not about the token itself.
const (
	ClientIDTaken Kind = "client_id_taken" // the client id belongs to a session of another user
	BadAuthMethod Kind = "bad_auth_method" // an Authentication Method other than JWT, or a re-authentication changing it

	// AuthProtocolError: an AUTH packet outside a re-authentication (reason code other than 0x19, or on an
	// MQTT 3.1.1 connection, where AUTH does not exist).
	AuthProtocolError Kind = "auth_protocol_error"
	// NotAuthenticated: an AUTH from a client authhook holds no identity for. Defensive: mochi admits no
	// client that authhook did not authenticate, so no client can reach it.
	NotAuthenticated Kind = "not_authenticated"
)

// Refusals outside authhook.
const (
	RateLimited       Kind = "rate_limited"        // broker: mqtt.max_connect_rate exceeded for the client's IP
	WillNotAuthorized Kind = "will_not_authorized" // aclhook: the Will topic is one the client may not publish to
	// cluster: this node is not part of a working cluster (starting, cut off from the majority): the client
	// should try another node rather than talk to a split brain.
	ClusterUnavailable Kind = "cluster_unavailable"
)

// Credentials lists every credential Kind, in the order above.
var Credentials = []Kind{
	IssuerMismatch, TokenExpired, TokenNotYetValid, InvalidSignature, InvalidAudience, InvalidAZP, MissingClaim,
	UnknownKID, Malformed, TokenTooLarge, AlgNotAllowed, KeysUnavailable, UsernameMismatch, MissingCredential,
	ProviderNotFound, TokenRevoked,
	UnknownDevice, DeviceBlocked, KeyExpired, LifetimeTooLong, IATSkew, ProjectMismatch,
}

// Connack is the CONNACK reason code for a refusal of kind k to a client of protocolVersion (3, 4 or 5).
// send is false when the client is to get no CONNACK and its connection is just closed [MQTT-3.2.2-6].
// On MQTT 5 the code carries the Reason String.
func Connack(k Kind, protocolVersion byte) (code packets.Code, send bool) {
	r := Lookup(k)
	if protocolVersion < 5 {
		return packets.Code{Code: r.V3}, r.V3 != 0
	}
	return packets.Code{Code: r.V5, Reason: r.Reason}, r.V5 != 0
}

// Disconnect is the DISCONNECT reason code and Reason String that end an MQTT 5 connection refused at
// re-authentication with kind k. (An MQTT 3.1.1 connection is closed without a packet.)
func Disconnect(k Kind) packets.Code {
	r := Lookup(k)
	return packets.Code{Code: r.Disconnect, Reason: r.Reason}
}

// Err is the error a hook returns to mochi from OnConnect after sending the refusal CONNACK: the MQTT 5 code,
// which mochi reports as the reason the connection ended.
func Err(k Kind) packets.Code {
	r := Lookup(k)
	return packets.Code{Code: r.V5, Reason: r.Reason}
}

// Lookup returns the row of k. A Kind missing from Table (a bug the package test catches) gets the answer
// for a credential that does not verify, so a refusal is never turned into an acceptance.
func Lookup(k Kind) Row {
	if r, ok := byKind[k]; ok {
		return r
	}
	return Row{Kind: k, V5: codeBadCredentials, V3: v3BadCredentials, Disconnect: codeNotAuthorized,
		Reason: packets.ErrBadUsernameOrPassword.Reason, Level: levelWarn}
}
