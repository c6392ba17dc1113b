package testkit

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fatalRecorder records a Fatalf instead of ending the test, so Eventually's failure can be checked.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = strings.TrimSpace(fmt.Sprintf(format, args...))
}

func TestEventually(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			time.Sleep(10 * time.Millisecond)
			n.Add(1)
		}
	}()
	Eventually(t, 5*time.Second, func() bool { return n.Load() == 3 }, "counter never reached 3")

	r := &fatalRecorder{TB: t}
	start := time.Now()
	Eventually(r, 50*time.Millisecond, func() bool { return false }, "queue still holds %d", 7)
	if r.msg != "queue still holds 7 (waited 50ms)" {
		t.Fatalf("failure message %q", r.msg)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("gave up after %s, before the deadline", waited)
	}
}
