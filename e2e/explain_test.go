package e2e

import (
	"strings"
	"testing"
)

// TestExplainThroughTheBinary: `idmq explain` answers offline from the config, and POST /v1/explain from the
// running broker (its revocations included); neither prints the token.
func TestExplainThroughTheBinary(t *testing.T) {
	p := startReloadBroker(t, "", `    - {topic: "news/#", access: subscribe}`)
	alice := p.token("alice")

	out, errOut, code := p.idmqCmd("explain", "-c", p.config, "--token", alice, "--username", "jwt",
		"--topic", "users/alice/#:subscribe", "--topic", "news/today:publish", "--topic", "users/bob/x:subscribe")
	if code != 0 {
		t.Fatalf("idmq explain: exit %d: %s %s", code, out, errOut)
	}
	for _, want := range []string{
		"provider: local",
		"result: accepted",
		"ALLOW  subscribe  users/alice/#  by rules[1]",
		"DENY   publish    news/today  by rules[3]: the first rule covering it allows subscribe only",
		"DENY   subscribe  users/bob/x  by default deny: no rule matched: default deny",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("idmq explain output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errOut, alice) {
		t.Fatal("idmq explain printed the token")
	}

	if code, body := p.admin(t, "POST", "/v1/revocations", reloadAdminKey, `{"username": "alice"}`); code != 200 {
		t.Fatalf("revoke: %d %v", code, body)
	}
	code, body := p.admin(t, "POST", "/v1/explain", reloadAdminKey, `{"token": "`+alice+`", "topics": [{"topic": "users/alice/x"}]}`)
	e, _ := body["error"].(map[string]any)
	if code != 200 || e["reason"] != "token_revoked" || e["code"] != "token_revoked" {
		t.Fatalf("POST /v1/explain of a revoked token: %d %v", code, body)
	}
	if strings.Contains(p.logs.String(), alice) {
		t.Fatal("the broker logged the token")
	}
}
