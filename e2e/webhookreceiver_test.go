package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// hookEvent is the payload as a receiver sees it.
type hookEvent struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Time       string `json:"time"`
	Node       string `json:"node"`
	ClientID   string `json:"client_id"`
	Username   string `json:"username"`
	Provider   string `json:"provider"`
	RemoteAddr string `json:"remote_addr"`
	ReasonCode *int   `json:"reason_code"`
	Reason     string `json:"reason"`
	raw        string
}

// hookReceiver is a backend's endpoint on a fixed loopback port that can go down (connection refused) and
// come back. It checks every request with the README's recipe, written out here rather than calling the
// events package: parse t and v1 from Idmq-Signature, refuse a t more than 5 minutes from now, compare
// HMAC-SHA256(secret, t + "." + raw body) in constant time.
type hookReceiver struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	srv  *http.Server
	got  []hookEvent
	bad  []string
	// loseAnswers makes the next n accepted events answer 503 anyway: the event was processed but idmq does
	// not know it (a lost response), so it must send it again, with the same id.
	loseAnswers int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{t: t, addr: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))}
	r.up()
	t.Cleanup(r.down)
	return r
}

func (r *hookReceiver) url() string { return "http://" + r.addr + "/idmq-events" }

func (r *hookReceiver) up() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port was ours a moment ago
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(r.serve)}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (r *hookReceiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func verifyRecipe(secret, header string, body []byte, now time.Time) error {
	var ts string
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("no timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %s away", d)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := verifyRecipe(webhookSecret, req.Header.Get("Idmq-Signature"), body, time.Now()); err != nil {
		r.mu.Lock()
		r.bad = append(r.bad, err.Error())
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var e hookEvent
	if err := json.Unmarshal(body, &e); err != nil || e.ID == "" || e.ID != req.Header.Get("Idmq-Event-Id") {
		r.mu.Lock()
		r.bad = append(r.bad, "bad body: "+string(body))
		r.mu.Unlock()
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	e.raw = string(body)
	r.mu.Lock()
	r.got = append(r.got, e)
	lose := r.loseAnswers > 0
	if lose {
		r.loseAnswers--
	}
	r.mu.Unlock()
	if lose {
		http.Error(w, "processed, but the answer is lost", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// events returns what arrived, duplicates included, in arrival order.
func (r *hookReceiver) events() []hookEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Fatalf("the receiver refused requests: %v", r.bad)
	}
	return slices.Clone(r.got)
}

// unique drops retries: a duplicate must carry the same id and the very same body.
func unique(t *testing.T, all []hookEvent) []hookEvent {
	t.Helper()
	seen := map[string]string{}
	var out []hookEvent
	for _, e := range all {
		if raw, ok := seen[e.ID]; ok {
			if raw != e.raw {
				t.Fatalf("id %s arrived with two different bodies:\n%s\n%s", e.ID, raw, e.raw)
			}
			continue
		}
		seen[e.ID] = e.raw
		out = append(out, e)
	}
	return out
}

// of is the sequence of "type[:reason_code]" one client's events arrived in.
func of(events []hookEvent, clientID string) []string {
	var out []string
	for _, e := range events {
		if e.ClientID != clientID {
			continue
		}
		s := e.Type
		if e.ReasonCode != nil {
			s += fmt.Sprintf(":%#x", *e.ReasonCode)
		}
		out = append(out, s)
	}
	return out
}

func (r *hookReceiver) waitFor(t *testing.T, within time.Duration, clientID string, n int) []string {
	t.Helper()
	var seq []string
	testkit.Eventually(t, within, func() bool {
		seq = of(unique(t, r.events()), clientID)
		return len(seq) >= n
	}, "%d events for %s (have %v)", n, clientID, func() []string { return seq }())
	return seq
}

// types is of without reason codes.
func types(events []hookEvent, clientID string) []string {
	out := of(events, clientID)
	for i, s := range out {
		out[i], _, _ = strings.Cut(s, ":")
	}
	return out
}

// blackhole accepts connections and never answers: a receiver that hangs, the worst case for a sender.
func blackhole(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String() + "/idmq-events"
}
