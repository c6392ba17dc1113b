package broker

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

const reloadBase = `
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http: {address: "127.0.0.1:0", admin_keys: [admin-key-0123456789]}
storage: {type: memory}
log: {level: info}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
`

// TestReloadAppliesOrChangesNothing: a valid file replaces the rules, the admin keys and the log level, and
// names what needs a restart; an invalid one changes nothing and answers the error `idmq check` prints.
func TestReloadAppliesOrChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "idmq.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte("data_dir: "+dir+"\n"+s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(reloadBase)
	cfg, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	log := NewLogger(cfg.Log, io.Discard)
	b, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.release)
	rules := b.acl.Rules()

	write(reloadBase + "mqtt: {max_inflight: 0}\n")
	_, err = b.Reload()
	_, checkErr := LoadFile(path)
	if err == nil || checkErr == nil || err.Error() != checkErr.Error() || !strings.Contains(err.Error(), "mqtt.max_inflight") {
		t.Fatalf("invalid file: reload error %v, check error %v", err, checkErr)
	}
	if b.acl.Rules() != rules || counterValue(t, b.reloads.total.WithLabelValues("failure")) != 1 {
		t.Fatal("an invalid file changed the rules or was not counted")
	}

	next := strings.NewReplacer(`"users/%u/#"`, `"users/%u/inbox"`, "admin-key-0123456789", "other-admin-key-0123456789",
		"level: info", "level: debug", `127.0.0.1:0"}]`, `127.0.0.1:1"}]`).Replace(reloadBase)
	write(next)
	res, err := b.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if b.acl.Rules() == rules || !b.live.Load().adminKeys.match("other-admin-key-0123456789") || b.live.Load().adminKeys.match("admin-key-0123456789") {
		t.Fatal("rules or admin keys not replaced")
	}
	if !log.Enabled(t.Context(), slog.LevelDebug) {
		t.Fatal("log.level debug not applied")
	}
	if strings.Join(res.RestartRequired, ",") != "listeners" {
		t.Fatalf("restart required %v, want listeners", res.RestartRequired)
	}
	if counterValue(t, b.reloads.total.WithLabelValues("success")) != 1 {
		t.Fatal("success not counted")
	}
}
