package refusal

import (
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"regexp"
	"testing"
)

// kindConstants reads the Kind constants declared in refusal.go, so a new Kind without a row fails here.
func kindConstants(t *testing.T) map[Kind]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "refusal.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[Kind]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			v := s.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "Kind" {
				continue
			}
			lit := v.Values[0].(*ast.BasicLit)
			kinds[Kind(lit.Value[1:len(lit.Value)-1])] = v.Names[0].Name
		}
	}
	if len(kinds) < 20 {
		t.Fatalf("found only %d Kind constants in refusal.go", len(kinds))
	}
	return kinds
}

// The reason codes each packet may carry: MQTT 5 Table 3-1 [MQTT-3.2.2-8] and Table 3-10 [MQTT-3.14.2-1].
var (
	connackCodes    = codeSet(0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)
	disconnectCodes = codeSet(0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2)
	metricSelector  = regexp.MustCompile(`^idmq_[a-z_]+(\{[a-z_]+="[a-z_]+"(,[a-z_]+="[a-z_]+")*\})?$`)
)

func codeSet(codes ...byte) map[byte]bool {
	m := map[byte]bool{}
	for _, c := range codes {
		m[c] = true
	}
	return m
}

func TestTableIsComplete(t *testing.T) {
	kinds := kindConstants(t)
	seen := map[Kind]bool{}
	for _, r := range Table {
		if kinds[r.Kind] == "" {
			t.Errorf("row %q is no Kind constant", r.Kind)
		}
		if seen[r.Kind] {
			t.Errorf("two rows for %q", r.Kind)
		}
		seen[r.Kind] = true
	}
	for k, name := range kinds {
		if !seen[k] {
			t.Errorf("%s (%q) has no row in Table", name, k)
		}
	}
}

func TestTableCodesAreValid(t *testing.T) {
	for _, r := range Table {
		t.Run(string(r.Kind), func(t *testing.T) {
			if r.V5 == 0 && r.Disconnect == 0 {
				t.Fatal("refuses nothing: neither a CONNACK nor a DISCONNECT code")
			}
			if r.V5 != 0 && !connackCodes[r.V5] {
				t.Errorf("CONNACK 0x%02X is no MQTT 5 CONNACK reason code", r.V5)
			}
			if r.V5 == 0 && r.V3 != 0 {
				t.Errorf("3.1.1 code 0x%02X for a Kind that never refuses a CONNECT", r.V3)
			}
			// 3.1.1 return codes 1-5 [MQTT-3.2.2.3]; 0 = no CONNACK, allowed when none fits [MQTT-3.2.2-6].
			if r.V3 > 0x05 {
				t.Errorf("3.1.1 CONNACK 0x%02X is not a 3.1.1 return code (0x01-0x05)", r.V3)
			}
			if r.V5 != 0 && r.V3 == 0 && r.Kind != RateLimited {
				t.Errorf("no 3.1.1 CONNACK: only rate_limited has no fitting 3.1.1 return code")
			}
			if r.Disconnect != 0 && !disconnectCodes[r.Disconnect] {
				t.Errorf("DISCONNECT 0x%02X is no MQTT 5 DISCONNECT reason code", r.Disconnect)
			}
			if r.Reason == "" {
				t.Error("no Reason String")
			}
			if r.Metric != "" && !metricSelector.MatchString(r.Metric) {
				t.Errorf("metric %q is not a selector", r.Metric)
			}
			if r.Level != slog.LevelInfo && r.Level != slog.LevelWarn {
				t.Errorf("level %v", r.Level)
			}
		})
	}
}

func TestConnackAndDisconnect(t *testing.T) {
	tests := []struct {
		kind       Kind
		v5, v3     byte
		send3      bool
		disconnect byte
		reason     string
	}{
		{kind: TokenExpired, v5: 0x86, v3: 0x04, send3: true, disconnect: 0x87, reason: "token_expired"},
		{kind: ClientIDTaken, v5: 0x85, v3: 0x02, send3: true, disconnect: 0x87, reason: "client_id_taken"},
		{kind: BadAuthMethod, v5: 0x8C, v3: 0x04, send3: true, disconnect: 0x82, reason: "bad_auth_method"},
		{kind: RateLimited, v5: 0x9F, v3: 0x00, send3: false, reason: "connection rate exceeded"},
		{kind: WillNotAuthorized, v5: 0x87, v3: 0x05, send3: true, reason: "not authorized: will topic"},
		// A Kind without a row is refused like a bad credential, never accepted.
		{kind: Kind("no_such_kind"), v5: 0x86, v3: 0x04, send3: true, disconnect: 0x87, reason: "bad username or password"},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			if c, send := Connack(tt.kind, 5); !send || c.Code != tt.v5 || c.Reason != tt.reason {
				t.Errorf("v5 CONNACK %+v send=%v, want 0x%02X %q", c, send, tt.v5, tt.reason)
			}
			for _, v := range []byte{3, 4} {
				if c, send := Connack(tt.kind, v); send != tt.send3 || c.Code != tt.v3 {
					t.Errorf("protocol %d CONNACK 0x%02X send=%v, want 0x%02X send=%v", v, c.Code, send, tt.v3, tt.send3)
				}
			}
			if d := Disconnect(tt.kind); d.Code != tt.disconnect || (tt.disconnect != 0 && d.Reason != tt.reason) {
				t.Errorf("DISCONNECT %+v, want 0x%02X %q", d, tt.disconnect, tt.reason)
			}
		})
	}
}
