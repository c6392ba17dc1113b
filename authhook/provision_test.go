package authhook

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// hookGoroutines lists the goroutines running authhook code, by id, except the tests' own: the calling
// test's, and the test IdP's HTTP handlers.
func hookGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		stack := string(g)
		if !strings.Contains(stack, "idmq/authhook.") || strings.Contains(stack, "testing.tRunner") || strings.Contains(stack, "net/http.(*conn).serve") {
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(stack, "goroutine "), " ")
		out[id] = stack
	}
	return out
}

// checkNoHookGoroutineLeft waits a little for goroutines ending on their own (an HTTP fetch whose context
// was just cancelled), then fails on any authhook goroutine that was not there before.
func checkNoHookGoroutineLeft(t *testing.T, before map[string]string) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left = left[:0]
		for id, stack := range hookGoroutines() {
			if _, old := before[id]; !old {
				left = append(left, stack)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	slices.Sort(left)
	t.Fatalf("%d authhook goroutines outlived the hook:\n%s", len(left), strings.Join(left, "\n\n"))
}

// backgroundConfig has a remote key set (refreshed in the background, first fetch held at the IdP) and a
// polled device registry: both kinds of background work a hook starts.
func backgroundConfig(t *testing.T) Config {
	idp := testkit.NewIdP(t, testkit.NewKey(t, "RS256", "k1"))
	t.Cleanup(idp.Hold()) // runs before the IdP's own cleanup closes its server
	return Config{Providers: []ProviderConfig{
		{Name: "corp", Type: TypeOIDC, Issuer: idp.Issuer()},
		{Name: "fleet", Type: TypeDevices, Project: "fleet-project", RegistryDir: t.TempDir()},
	}}
}

func TestFailedNewLeavesNoGoroutine(t *testing.T) {
	cfg := backgroundConfig(t)
	// Valid, so it passes Validate; the directory is read when the provider is provisioned, after the
	// others started their background work.
	cfg.Providers = append(cfg.Providers, ProviderConfig{Name: "broken", Type: TypeDevices, Project: "other", RegistryDir: filepath.Join(t.TempDir(), "missing")})
	before := hookGoroutines()
	h, err := New(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		_ = h.Stop()
		t.Fatal("New accepted a registry_dir that does not exist")
	}
	if !strings.Contains(err.Error(), "auth.providers[2].registry_dir") {
		t.Fatalf("error %q does not name the field", err)
	}
	checkNoHookGoroutineLeft(t, before)
}

func TestStopEndsBackgroundWork(t *testing.T) {
	before := hookGoroutines()
	h, err := New(Options{Config: backgroundConfig(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if len(hookGoroutines()) == len(before) {
		t.Fatal("the hook started no background work: this test proves nothing")
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	checkNoHookGoroutineLeft(t, before)
	if err := h.Stop(); err != nil { // mochi's server.Close stops it, then the embedder may again
		t.Fatal(err)
	}
}
