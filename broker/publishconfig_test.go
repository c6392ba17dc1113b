package broker

import (
	"testing"
)

// TestPublishKeysFromEnvironment: publish keys expand ${VAR} like every secret, and each presented key
// finds its own scope; the admin key finds every topic but '$' ones.
func TestPublishKeysFromEnvironment(t *testing.T) {
	t.Setenv("IDMQ_TEST_NOTIFY_KEY", "notify-from-env-0123456789")
	cfg, err := Parse([]byte(`
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http:
  admin_keys: [admin-key-0123456789abcdef]
  publish_keys:
    - {key: "${IDMQ_TEST_NOTIFY_KEY}", topics: ["notifications/#"]}
    - {key: devices-key-0123456789abcdef, topics: ["devices/+/cmd"]}
auth: {providers: [{name: local, type: local}]}
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.PublisherClientID != "$idmq-http" || cfg.HTTP.PublishRateLimit.Burst != maxPublishBatch {
		t.Fatalf("defaults: %q %+v", cfg.HTTP.PublisherClientID, cfg.HTTP.PublishRateLimit)
	}
	access := newPublishAccess(cfg.HTTP)
	cases := []struct {
		name, key, topic string
		known, allowed   bool
	}{
		{"env key in scope", "notify-from-env-0123456789", "notifications/x", true, true},
		{"env key out of scope", "notify-from-env-0123456789", "devices/a/cmd", true, false},
		{"the reference itself is no key", "${IDMQ_TEST_NOTIFY_KEY}", "notifications/x", false, false},
		{"second key", "devices-key-0123456789abcdef", "devices/a/cmd", true, true},
		{"second key, other level", "devices-key-0123456789abcdef", "devices/a/b/cmd", true, false},
		{"admin", "admin-key-0123456789abcdef", "anything/at/all", true, true},
		{"admin, $ topic", "admin-key-0123456789abcdef", "$SYS/x", true, false},
		{"prefix of a key", "devices-key-0123456789abcde", "devices/a/cmd", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			caller, known := access.identify(c.key)
			if known != c.known || (known && caller.allows(c.topic) != c.allowed) {
				t.Fatalf("known %v allows %v", known, known && caller.allows(c.topic))
			}
		})
	}
	a, _ := access.identify("notify-from-env-0123456789")
	b, _ := access.identify("devices-key-0123456789abcdef")
	if a.bucket == b.bucket || a.bucket == "" {
		t.Fatal("two keys share a rate limit bucket")
	}
}

func TestKeyringFind(t *testing.T) {
	k := newKeyring([]string{"first-0123456789abcdef", "second-0123456789abcdef", "third-0123456789abcdef"})
	for i, key := range []string{"first-0123456789abcdef", "second-0123456789abcdef", "third-0123456789abcdef"} {
		if got := k.find(key); got != i {
			t.Fatalf("find(%q) = %d, want %d", key, got, i)
		}
	}
	if k.find("fourth-0123456789abcdef") != -1 || k.match("") || newKeyring(nil).find("x") != -1 {
		t.Fatal("found a key that is not there")
	}
}
