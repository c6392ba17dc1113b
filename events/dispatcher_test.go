package events

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/internal/testkit"
)

// receiver is a webhook endpoint that verifies every request with the documented recipe (Verify) and keeps
// what it accepted; failing makes it answer 503.
type receiver struct {
	t       *testing.T
	srv     *httptest.Server
	failing atomic.Bool
	mu      sync.Mutex
	got     []Event
	bad     int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := Verify([]byte(secret16), req.Header.Get(SignatureHeader), body, time.Now(), DefaultTolerance); err != nil {
			r.mu.Lock()
			r.bad++
			r.mu.Unlock()
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if r.failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var e Event
		if err := json.Unmarshal(body, &e); err != nil || e.ID != req.Header.Get(EventIDHeader) {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, e)
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.got...)
}

func (r *receiver) webhook() WebhookConfig {
	return WebhookConfig{URL: r.srv.URL + "/hook", Secret: secret16, InsecureHTTP: true, Timeout: time.Second}
}

func newDispatcher(t *testing.T, w WebhookConfig, store *Store) (*Dispatcher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	d, err := New(Options{Config: Config{Webhooks: []WebhookConfig{w}}, Node: "n1", Store: store, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return d, reg
}

// counter sums the samples of name whose labels include the given name, value pairs.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			match := true
			for i := 0; i+1 < len(labels); i += 2 {
				match = match && have[labels[i]] == labels[i+1]
			}
			if !match {
				continue
			}
			if m.Counter != nil {
				sum += m.GetCounter().GetValue()
			} else {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// emitFor sends n events for each client, alternating clients.
func emitFor(d *Dispatcher, clients []string, n int) {
	for i := range n {
		for _, c := range clients {
			d.Emit(Event{Type: ClientConnected, ClientID: c, Reason: fmt.Sprint(i)})
		}
	}
}

// inOrder checks that every client's events arrived complete and in emission order (duplicates allowed:
// at-least-once), and returns how many distinct ids arrived.
func inOrder(t *testing.T, got []Event, clients []string, n int) int {
	t.Helper()
	next := map[string]int{}
	ids := map[string]bool{}
	for _, e := range got {
		if ids[e.ID] {
			continue // a retry of an event already received
		}
		ids[e.ID] = true
		if want := fmt.Sprint(next[e.ClientID]); e.Reason != want {
			t.Fatalf("client %s: event %s arrived when %s was expected", e.ClientID, e.Reason, want)
		}
		next[e.ClientID]++
	}
	for _, c := range clients {
		if next[c] != n {
			t.Fatalf("client %s: %d of %d events", c, next[c], n)
		}
	}
	return len(ids)
}

func TestDeliversSignedInOrderPerClientThroughAnOutage(t *testing.T) {
	r := newReceiver(t)
	r.failing.Store(true)
	d, reg := newDispatcher(t, r.webhook(), nil)
	defer d.Close()
	clients := []string{"alice", "bob", "carol", "dave"}
	emitFor(d, clients, 25)
	time.Sleep(1500 * time.Millisecond) // a few failed attempts each
	r.failing.Store(false)
	testkit.Eventually(t, 30*time.Second, func() bool { return len(r.events()) >= 100 }, "100 events delivered")
	if n := inOrder(t, r.events(), clients, 25); n != 100 {
		t.Fatalf("%d distinct events, want 100", n)
	}
	for _, e := range r.events() {
		if e.Node != "n1" || e.Time.IsZero() || len(e.ID) != 26 || e.Type != ClientConnected {
			t.Fatalf("event %+v lacks node, time, id or type", e)
		}
	}
	if r.bad != 0 {
		t.Fatalf("%d requests failed signature verification", r.bad)
	}
	name := r.srv.URL + "/hook"
	if got := counter(t, reg, "idmq_webhook_deliveries_total", "result", resultDelivered, "webhook", name); got != 100 {
		t.Fatalf("delivered counter %v, want 100", got)
	}
	if got := counter(t, reg, "idmq_webhook_deliveries_total", "result", resultFailed, "webhook", name); got < 1 {
		t.Fatalf("failed counter %v, want the attempts during the outage", got)
	}
	if got := counter(t, reg, "idmq_webhook_queue_depth"); got != 0 {
		t.Fatalf("queue depth %v after delivery", got)
	}
}

func TestAnEventIsDroppedAfterRetryFor(t *testing.T) {
	r := newReceiver(t)
	r.failing.Store(true)
	w := r.webhook()
	w.RetryFor = time.Second
	d, reg := newDispatcher(t, w, nil)
	defer d.Close()
	d.Emit(Event{Type: AuthFailed, ClientID: "mallory"})
	testkit.Eventually(t, 10*time.Second, func() bool {
		return counter(t, reg, "idmq_webhook_dropped_total", "reason", dropExpired) == 1
	}, "the event dropped as expired")
	if got := counter(t, reg, "idmq_webhook_queue_depth"); got != 0 {
		t.Fatalf("queue depth %v, want 0", got)
	}
}

func TestAFullQueueDropsTheOldest(t *testing.T) {
	hold := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hold }))
	defer srv.Close()
	defer close(hold)
	d, reg := newDispatcher(t, WebhookConfig{URL: srv.URL, Secret: secret16, InsecureHTTP: true, MaxQueue: 5, Timeout: time.Minute}, nil)
	start := time.Now()
	for range 20 {
		d.Emit(Event{Type: ClientConnected, ClientID: "alice"})
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("20 Emits against a receiver that never answers took %s", took)
	}
	if got := counter(t, reg, "idmq_webhook_dropped_total", "reason", dropQueueFull); got != 15 {
		t.Fatalf("queue_full drops %v, want 15", got)
	}
	if got := counter(t, reg, "idmq_webhook_queue_depth"); got != 5 {
		t.Fatalf("queue depth %v, want 5", got)
	}
	d.Close()
	if got := counter(t, reg, "idmq_webhook_dropped_total", "reason", dropShutdown); got != 5 {
		t.Fatalf("shutdown losses %v, want the 5 queued (memory only)", got)
	}
}

func TestTheStoreDeliversAfterARestart(t *testing.T) {
	r := newReceiver(t)
	r.failing.Store(true)
	path := filepath.Join(t.TempDir(), "events.db")
	store, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := newDispatcher(t, r.webhook(), store)
	clients := []string{"alice", "bob"}
	emitFor(d, clients, 10)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	before := len(r.events())

	r.failing.Store(false)
	store, err = OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	d, reg := newDispatcher(t, r.webhook(), store)
	testkit.Eventually(t, 10*time.Second, func() bool { return len(r.events()) >= 20 }, "20 events delivered after the restart")
	if before != 0 {
		t.Fatalf("%d events delivered while the receiver was failing", before)
	}
	inOrder(t, r.events(), clients, 10)
	// Events emitted after the restart follow the restored ones.
	d.Emit(Event{Type: ClientDisconnected, ClientID: "alice", Reason: "after"})
	testkit.Eventually(t, 10*time.Second, func() bool { return len(r.events()) == 21 }, "the new event delivered")
	if last := r.events()[20]; last.Reason != "after" {
		t.Fatalf("last event %+v", last)
	}
	// The delivered count covers the store's delete of each event.
	testkit.Eventually(t, 5*time.Second, func() bool {
		return counter(t, reg, "idmq_webhook_deliveries_total", "result", resultDelivered) == 21
	}, "21 deliveries counted")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	store, err = OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if left, _ := store.load(r.srv.URL + "/hook"); len(left) != 0 {
		t.Fatalf("%d delivered events still in the store", len(left))
	}
}
