package events

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	secret := []byte("0123456789abcdef-secret")
	body := []byte(`{"id":"01J","type":"client.connected"}`)
	at := time.Unix(1_800_000_000, 0)
	header := Sign(secret, at, body)
	if !strings.HasPrefix(header, "t=1800000000,v1=") || len(header) != len("t=1800000000,v1=")+64 {
		t.Fatalf("header %q", header)
	}
	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", secret, header, body, at.Add(time.Minute), nil},
		{"valid, a second signature listed first", secret, "t=1800000000,v1=" + strings.Repeat("00", 32) + "," + header[len("t=1800000000,"):], body, at, nil},
		{"body changed", secret, header, []byte(`{"id":"01J","type":"client.disconnected"}`), at, ErrSignatureMismatch},
		{"wrong secret", []byte("another-secret-0123"), header, body, at, ErrSignatureMismatch},
		{"replayed late", secret, header, body, at.Add(DefaultTolerance + time.Second), ErrTimestampSkew},
		{"from the future", secret, header, body, at.Add(-DefaultTolerance - time.Second), ErrTimestampSkew},
		{"timestamp changed", secret, strings.Replace(header, "t=1800000000", "t=1800000060", 1), body, at, ErrSignatureMismatch},
		{"no v1", secret, "t=1800000000", body, at, ErrBadSignatureHeader},
		{"garbage", secret, "nonsense", body, at, ErrBadSignatureHeader},
		{"empty", secret, "", body, at, ErrBadSignatureHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Verify(tt.secret, tt.header, tt.body, tt.now, DefaultTolerance); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}
