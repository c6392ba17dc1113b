package broker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNewThatFailsLeavesNothingBehind: a New that fails once the auth hook refreshes keys, the ACL hook
// sweeps and the write-ahead log is open (here: the bolt file cannot be opened) stops every goroutine it
// started and releases the log's file lock, so the process can try again or exit cleanly.
func TestNewThatFailsLeavesNothingBehind(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() // a key server that is down: the refresh goroutine keeps trying
	ln.Close()
	dir := t.TempDir()
	boltPath := filepath.Join(dir, "store")
	if err := os.Mkdir(boltPath, 0o700); err != nil { // a directory where the bolt file should be
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(fmt.Sprintf(`
data_dir: %s
listeners: [{type: tcp, address: "127.0.0.1:0"}]
storage: {type: bolt, path: %s}
auth:
  providers:
    - {name: down, type: oidc, issuer: %s, jwks_url: %s/jwks}
acl: {rules: [{topic: "users/%%u/#", access: pubsub}]}
`, dir, boltPath, dead, dead)), dir)
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()

	_, err = New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "storage (bolt") {
		t.Fatalf("New = %v, want a storage error", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before New, %d after it failed:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	f, err := os.OpenFile(filepath.Join(dir, walFileName), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("the write-ahead log was not opened before the failure: %v", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("the write-ahead log is still locked after New failed: %v", err)
	}
}

// An embedder's Close after a failed Start (which closed the server already), or a second Close, must not
// panic in mochi's Close.
func TestBrokerClosesOnce(t *testing.T) {
	cfg, err := Parse([]byte(fmt.Sprintf("data_dir: %s\nlisteners: [{type: tcp, address: \"127.0.0.1:0\"}]\n"+
		"auth: {providers: [{name: local, type: local}]}\n", t.TempDir())), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, cfg, slog.New(slog.DiscardHandler))
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
