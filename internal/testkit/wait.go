package testkit

import (
	"fmt"
	"testing"
	"time"
)

// Eventually polls cond every 5 ms until it holds. If it still does not after within, the test fails with
// the message (format and args, as for Fatalf) and how long it waited.
func Eventually(t testing.TB, within time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s (waited %s)", fmt.Sprintf(format, args...), within)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
