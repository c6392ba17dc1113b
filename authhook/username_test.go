package authhook

import "testing"

func TestEscapeUsername(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{name: "plain", in: "alice", want: "alice"},
		{name: "email", in: "alice@example.com", want: "alice@example.com"},
		{name: "wildcards and separator", in: "a+b#c/d", want: "a%2Bb%23c%2Fd"},
		{name: "percent itself", in: "50%", want: "50%25"},
		{name: "leading dollar", in: "$SYS", want: "%24SYS"},
		{name: "inner dollar kept", in: "a$b", want: "a$b"},
		{name: "control chars", in: "a\x00b\nc\x7f", want: "a%00b%0Ac%7F"},
		{name: "C1 control", in: "a\u0085b", want: "a%C2%85b"},
		{name: "invalid UTF-8", in: "a\xffb", want: "a%FFb"},
		{name: "unicode kept", in: "zoë", want: "zoë"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := escapeUsername(tt.in)
			if got != tt.want {
				t.Fatalf("escapeUsername(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if !safeUsername(got) {
				t.Fatalf("%q is not safe", got)
			}
		})
	}
}

// Two identities must never collapse into one username.
func TestEscapeUsernameInjective(t *testing.T) {
	inputs := []string{"a/b", "a%2Fb", "a%2fb", "%", "%25", "$x", "%24x", "+", "%2B", "a\x00", "a%00", "", "a", "a#", "a%23"}
	seen := map[string]string{}
	for _, in := range inputs {
		out := escapeUsername(in)
		if prev, dup := seen[out]; dup {
			t.Fatalf("%q and %q both escape to %q", prev, in, out)
		}
		seen[out] = in
	}
}

func FuzzEscapeUsername(f *testing.F) {
	for _, s := range []string{"a/b", "$SYS/#", "%2F", "a\x00"} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := escapeUsername(a), escapeUsername(b)
		if !safeUsername(ea) {
			t.Fatalf("unsafe output %q for %q", ea, a)
		}
		if a != b && ea == eb {
			t.Fatalf("%q and %q collide as %q", a, b, ea)
		}
	})
}
