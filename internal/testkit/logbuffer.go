package testkit

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuffer collects what other goroutines write (a broker's logger, a child process's stdout and stderr)
// for the test to read meanwhile. The zero value is ready to use.
type LogBuffer struct {
	// Max, when positive, caps what is kept: once the buffer holds Max bytes, later writes are reported as
	// written and dropped, so a runaway child process cannot fill the test's memory.
	Max int

	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Max > 0 && b.buf.Len() >= b.Max {
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines is what has been written, split at newlines, without the empty string after a final newline; nil
// when nothing has been written. A structured logger writes one record a line.
func (b *LogBuffer) Lines() []string {
	s := b.String()
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// Contains reports whether s has been written.
func (b *LogBuffer) Contains(s string) bool { return strings.Contains(b.String(), s) }

// Await waits up to within for s to be written and reports whether it was.
func (b *LogBuffer) Await(s string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for !b.Contains(s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// WaitFor is Await that fails the test, showing the log, when s does not come; it returns the log.
func (b *LogBuffer) WaitFor(t testing.TB, s string, within time.Duration) string {
	t.Helper()
	if !b.Await(s, within) {
		t.Fatalf("no %q in the log within %s:\n%s", s, within, b.String())
	}
	return b.String()
}
