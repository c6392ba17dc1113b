package testkit

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLogBufferConcurrentWriters(t *testing.T) {
	var b LogBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				fmt.Fprintf(&b, "w%d-%d\n", i, j)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if lines := strings.Count(b.String(), "\n"); lines != 800 {
		t.Fatalf("%d lines, want 800", lines)
	}
	if !b.Contains("w7-99\n") || b.Contains("w8-0") {
		t.Fatalf("Contains disagrees with the log:\n%s", b.String())
	}
}

func TestLogBufferAwait(t *testing.T) {
	var b LogBuffer
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = b.Write([]byte("broker: ready\n"))
	}()
	if got := b.WaitFor(t, "ready", 5*time.Second); got != "broker: ready\n" {
		t.Fatalf("WaitFor returned %q", got)
	}
	if b.Await("never written", 30*time.Millisecond) {
		t.Fatal("Await found a line nobody wrote")
	}
}

func TestLogBufferMax(t *testing.T) {
	b := LogBuffer{Max: 4}
	for _, s := range []string{"ab", "cd", "ef"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v: a capped buffer must still accept writes", s, n, err)
		}
	}
	if b.String() != "abcd" {
		t.Fatalf("kept %q, want the first 4 bytes", b.String())
	}
}

func TestLogBufferLines(t *testing.T) {
	var b LogBuffer
	if b.Lines() != nil {
		t.Fatalf("an empty buffer has lines %q", b.Lines())
	}
	_, _ = b.Write([]byte("{\"msg\":\"one\"}\n{\"msg\":\"two\"}\n"))
	if got := b.Lines(); len(got) != 2 || got[0] != `{"msg":"one"}` || got[1] != `{"msg":"two"}` {
		t.Fatalf("Lines() = %q", got)
	}
}
