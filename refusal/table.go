package refusal

import (
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Row is what a client, an operator's dashboard and the log see for one Kind of refusal.
type Row struct {
	Kind Kind
	// V5 is the MQTT 5 CONNACK reason code; 0 for a Kind that never refuses a CONNECT.
	V5 byte
	// V3 is the MQTT 3.1.1 CONNACK return code (0x01-0x05); 0 means no CONNACK: the connection is closed.
	V3 byte
	// Disconnect is the MQTT 5 DISCONNECT reason code when the refusal ends an established connection
	// (re-authentication); 0 for a Kind that never does.
	Disconnect byte
	// Reason is the MQTT 5 Reason String of the CONNACK or DISCONNECT.
	Reason string
	// Metric is the counter the refusal increments, as a Prometheus selector ("" = none). Re-authentication
	// refusals increment nothing: only CONNECT attempts are counted in idmq_auth_total.
	Metric string
	// Level is the slog level of the log line of the refusal.
	Level slog.Level
}

const (
	codeBadCredentials  = 0x86 // Bad User Name or Password
	codeNotAuthorized   = 0x87 // Not authorized
	codeProtocolError   = 0x82 // Protocol Error
	v3BadCredentials    = 0x04 // 3.1.1: bad user name or password [MQTT-3.2.2.3]
	v3IDRejected        = 0x02 // 3.1.1: identifier rejected
	v3NotAuthorized     = 0x05 // 3.1.1: not authorized
	v3ServerUnavailable = 0x03 // 3.1.1: server unavailable
	levelWarn           = slog.LevelWarn
)

// Table has one row per Kind; read it, never change it (Lookup indexes it once). Every credential Kind:
// CONNACK 0x86 (3.1.1: 0x04), DISCONNECT 0x87 at re-authentication, Reason String = the Kind.
var Table = buildTable()

var byKind = func() map[Kind]Row {
	m := make(map[Kind]Row, len(Table))
	for _, r := range Table {
		m[r.Kind] = r
	}
	return m
}()

func buildTable() []Row {
	rows := make([]Row, 0, len(Credentials)+6)
	for _, k := range Credentials {
		rows = append(rows, Row{Kind: k, V5: codeBadCredentials, V3: v3BadCredentials, Disconnect: codeNotAuthorized,
			Reason: string(k), Metric: authMetric(k), Level: levelWarn})
	}
	return append(rows,
		// The client id is valid, but not for this user: 0x85 is the nearest code; 3.1.1 calls it identifier rejected.
		Row{Kind: ClientIDTaken, V5: packets.ErrClientIdentifierNotValid.Code, V3: v3IDRejected, Disconnect: codeNotAuthorized,
			Reason: string(ClientIDTaken), Metric: authMetric(ClientIDTaken), Level: levelWarn},
		// CONNACK 0x8C [MQTT-4.12.0-1]; a 3.1.1 client cannot send a method, 0x04 is the nearest. DISCONNECT has
		// no 0x8C [MQTT-3.14.2-1]: a re-authentication with another method breaks [MQTT-4.12.1-1], a
		// Protocol Error.
		Row{Kind: BadAuthMethod, V5: packets.ErrBadAuthenticationMethod.Code, V3: v3BadCredentials, Disconnect: codeProtocolError,
			Reason: string(BadAuthMethod), Metric: authMetric(BadAuthMethod), Level: levelWarn},
		// The Reason String stays "malformed", which it was before this Kind had a name of its own.
		Row{Kind: AuthProtocolError, Disconnect: codeProtocolError, Reason: string(Malformed), Level: levelWarn},
		Row{Kind: NotAuthenticated, Disconnect: codeNotAuthorized, Reason: packets.ErrNotAuthorized.Reason, Level: levelWarn},
		// 3.1.1 has no return code for a rate: no CONNACK [MQTT-3.2.2-6].
		Row{Kind: RateLimited, V5: packets.ErrConnectionRateExceeded.Code, Reason: packets.ErrConnectionRateExceeded.Reason,
			Metric: "idmq_connect_rate_limited_total", Level: levelWarn},
		// A client's own Will is not a credential problem: Info, as every ACL denial.
		Row{Kind: WillNotAuthorized, V5: codeNotAuthorized, V3: v3NotAuthorized, Reason: "not authorized: will topic",
			Metric: `idmq_acl_denied_total{action="will"}`, Level: slog.LevelInfo},
		// CONNACK 0x88 Server unavailable; 3.1.1's 0x03 is the same. DISCONNECT has no 0x88: the clients of a node
		// still cut off after the grace get 0x9C Use another server, which is what they should do.
		Row{Kind: ClusterUnavailable, V5: packets.ErrServerUnavailable.Code, V3: v3ServerUnavailable,
			Disconnect: packets.ErrUseAnotherServer.Code, Reason: "server unavailable: not connected to the cluster",
			Metric: "idmq_cluster_refused_total", Level: levelWarn},
	)
}

func authMetric(k Kind) string {
	return `idmq_auth_total{result="failure",reason="` + string(k) + `"}`
}
