package authhook

import (
	"errors"
	"testing"
)

func TestConnackCode(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		v5, v3 byte
	}{
		{name: "expired", err: refuse(ReasonTokenExpired, "x"), v5: 0x86, v3: 0x04},
		{name: "bad signature", err: refuse(ReasonInvalidSignature, "x"), v5: 0x86, v3: 0x04},
		{name: "keys unavailable", err: refuse(ReasonKeysUnavailable, "x"), v5: 0x86, v3: 0x04},
		{name: "username mismatch", err: refuse(ReasonUsernameMismatch, "x"), v5: 0x86, v3: 0x04},
		{name: "client id taken", err: refuse(ReasonClientIDTaken, "x"), v5: 0x85, v3: 0x02},
		{name: "bad auth method", err: refuse(ReasonBadAuthMethod, "x"), v5: 0x8C, v3: 0x04},
		{name: "foreign error", err: errors.New("boom"), v5: 0x86, v3: 0x04},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := connackCode(tt.err, 5).Code; got != tt.v5 {
				t.Fatalf("v5 = 0x%02X, want 0x%02X", got, tt.v5)
			}
			for _, v := range []byte{3, 4} {
				got := connackCode(tt.err, v).Code
				if got != tt.v3 {
					t.Fatalf("v%d = 0x%02X, want 0x%02X", v, got, tt.v3)
				}
				if got == 0x87 || got >= 0x80 {
					t.Fatalf("v%d got an MQTT 5 code 0x%02X", v, got)
				}
			}
		})
	}
}
