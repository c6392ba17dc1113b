package aclhook

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestDenialLinesAreRateLimitedPerClient: a client that repeats a denied publish causes one debug line
// per denyLogEvery, which counts what it left out; another client still gets its own line; the
// payload is never logged, and every denial is counted in the metric.
func TestDenialLinesAreRateLimitedPerClient(t *testing.T) {
	const payload = "blood-pressure-120-80"
	clock := &fakeClock{t: time.Now()}
	b := startBrokerWith(t, brokerConfig, clock.now)
	alice := b.mustDialV5(t, "alice", "alice-1")
	bob := b.mustDialV5(t, "bob", "bob-1")
	before := b.denied(labelPublish)
	for range 5 {
		if code := publishV5(t, alice, &paho.Publish{Topic: "users/bob/inbox", QoS: 1, Payload: []byte(payload)}); code != 0x87 {
			t.Fatalf("PUBACK %#x, want 0x87", code)
		}
	}
	if code := publishV5(t, bob, &paho.Publish{Topic: "users/alice/inbox", QoS: 1, Payload: []byte(payload)}); code != 0x87 {
		t.Fatalf("PUBACK %#x, want 0x87", code)
	}
	if got := strings.Count(b.log.String(), `msg="acl: denied" client=alice-1`); got != 1 {
		t.Errorf("%d denial lines for alice-1 within %v, want 1:\n%s", got, denyLogEvery, b.log)
	}
	if !strings.Contains(b.log.String(), `msg="acl: denied" client=bob-1 username=bob action=publish topic=users/alice/inbox rule="default deny"`) {
		t.Errorf("bob's denial was not logged:\n%s", b.log)
	}

	clock.add(denyLogEvery)
	publishV5(t, alice, &paho.Publish{Topic: "users/bob/inbox", QoS: 1, Payload: []byte(payload)})
	if !strings.Contains(b.log.String(), `msg="acl: denied" client=alice-1 username=alice action=publish topic=users/bob/inbox rule="default deny" suppressed=4`) {
		t.Errorf("after %v, no line for alice-1 reporting the 4 it left out:\n%s", denyLogEvery, b.log)
	}
	if strings.Contains(b.log.String(), payload) {
		t.Errorf("a payload reached the log:\n%s", b.log)
	}
	if got := b.denied(labelPublish) - before; got != 7 {
		t.Errorf("idmq_acl_denied_total{action=publish} grew by %v, want 7", got)
	}
}
