package authhook

import "github.com/mochi-mqtt/server/v2/packets"

// connackCode is the one place a refusal becomes a CONNACK reason code. The returned code carries a short
// reason string (sent to MQTT 5 clients as the CONNACK Reason String).
//
// MQTT 3.1.1 clients get 3.1.1 return codes chosen here rather than by mochi's packets.V5CodesToV3, which maps
// 0x86 to 0x05 (not authorized) instead of 0x04 (bad user name or password) and has no entry for 0x8C, so
// mochi would put a v5-only code on a 3.1.1 wire. Codes below 0x80 pass through SendConnack unchanged.
func connackCode(err error, protocolVersion byte) packets.Code {
	reason := ReasonOf(err)
	v5 := packets.ErrBadUsernameOrPassword       // 0x86
	v3 := packets.ErrMalformedUsernameOrPassword // 0x04 [MQTT-3.2.2.3] "bad user name or password"
	switch reason {
	case ReasonClientIDTaken:
		v5 = packets.ErrClientIdentifierNotValid  // 0x85
		v3 = packets.Err3ClientIdentifierNotValid // 0x02
	case ReasonBadAuthMethod:
		v5 = packets.ErrBadAuthenticationMethod // 0x8C; a 3.1.1 client cannot send a method, 0x04 is the nearest
	}
	if protocolVersion < 5 {
		return v3
	}
	return packets.Code{Code: v5.Code, Reason: reasonText(reason, v5)}
}

// reasonText is the CONNACK Reason String: the stable reason, which is what a user searches the docs for.
func reasonText(reason Reason, code packets.Code) string {
	if reason == "" {
		return code.Reason
	}
	return string(reason)
}
