package broker

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeExchangeRequest(t *testing.T) {
	tests := []struct {
		name, body string
		want       exchangeRequest
		wantErr    string
	}{
		{name: "token only", body: `{"token": "a.b.c"}`, want: exchangeRequest{Token: "a.b.c"}},
		{name: "token and provider", body: " {\n\"provider\":\"corp\" ,\t\"token\":\"a.b.c\"}\n", want: exchangeRequest{Token: "a.b.c", Provider: "corp"}},
		{name: "empty object", body: `{}`, want: exchangeRequest{}},
		{name: "escaped value takes the slow path", body: `{"token": "a\u002eb"}`, want: exchangeRequest{Token: "a.b"}},
		{name: "repeated key: last wins as in encoding/json", body: `{"token": "x", "token": "y"}`, want: exchangeRequest{Token: "y"}},
		{name: "unknown key", body: `{"token": "x", "extra": 1}`, wantErr: `unknown field "extra"`},
		{name: "number token", body: `{"token": 5}`, wantErr: "cannot unmarshal number"},
		{name: "empty body", body: ``, wantErr: "EOF"},
		{name: "unterminated", body: `{"token": "x"`, wantErr: "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeExchangeRequest(strings.NewReader(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// FuzzExchangeBodyDecode: whatever the fast path accepts, encoding/json (the contract) decodes to the same value.
func FuzzExchangeBodyDecode(f *testing.F) {
	for _, s := range []string{`{"token": "a.b.c"}`, `{"provider":"p","token":"t"}`, `{}`, ` { } `, `{"token":"x",}`,
		`{"token":"x"}{}`, `{"token":"\u0041"}`, `{"token":"é"}`, `{"token":"x","token":"y"}`, `{"Token":"x"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		fast, ok := scanExchangeRequest([]byte(body))
		if !ok {
			return
		}
		var slow exchangeRequest
		dec := json.NewDecoder(bytes.NewReader([]byte(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&slow); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", body, err)
		}
		if fast != slow {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", body, fast, slow)
		}
	})
}
