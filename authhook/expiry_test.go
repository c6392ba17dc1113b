package authhook

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit"
	"github.com/idmq/idmq/internal/testkit/wire"
)

// testLeeway is short so that expiry tests with 2-3 s tokens finish quickly.
const testLeeway = time.Second

func localConfig() Config {
	return Config{Leeway: testLeeway, Providers: []ProviderConfig{{Name: "local", Type: TypeLocal}}}
}

// mintLocal returns a local credential and the instant the broker must end a connection using it.
func mintLocal(t testing.TB, h *Hook, sub string, ttl time.Duration, attrs map[string]string) (token string, deadline time.Time) {
	t.Helper()
	token, exp, err := h.LocalIssuer().mint(sub, ttl, attrs, TopicGrants{}, "")
	if err != nil {
		t.Fatal(err)
	}
	return token, exp.Add(h.ps().cfg.Leeway)
}

// subscribeV5 connects a long-lived subscriber to filter.
func subscribeV5(t testing.TB, b *testBroker, clientID, filter string) *testkit.V5Client {
	t.Helper()
	token, _ := mintLocal(t, b.hook, "watcher", time.Hour, nil)
	c, ca := connectV5(t, b.addr, passwordConnect(clientID, "", token))
	if ca.ReasonCode != 0 {
		t.Fatalf("subscriber CONNACK 0x%02X", ca.ReasonCode)
	}
	if code := c.SubscribeQoS1(t, filter); code >= 0x80 {
		t.Fatalf("SUBACK 0x%02X for %s", code, filter)
	}
	return c
}

// countFor counts the messages arriving on c within d.
func countFor(c *testkit.V5Client, d time.Duration) int {
	n := 0
	deadline := time.After(d)
	for {
		select {
		case <-c.Received:
			n++
		case <-deadline:
			return n
		}
	}
}

// checkOnTime fails unless at is within a second after deadline: never early, at most 1 s late.
func checkOnTime(t testing.TB, what string, at, deadline time.Time) {
	t.Helper()
	late := at.Sub(deadline)
	if late < 0 || late > time.Second {
		t.Fatalf("%s %s after exp+leeway, want within [0, 1s]", what, late)
	}
	t.Logf("%s %s after exp+leeway", what, late.Round(time.Millisecond))
}

func TestExpiryDisconnectsV5WithReasonAndWill(t *testing.T) {
	b := startBrokerWith(t, Options{Config: localConfig()}, &allowAllACL{})
	watcher := subscribeV5(t, b, "watcher", "wills/#")
	token, deadline := mintLocal(t, b.hook, "alice", 2*time.Second, nil)
	cp := testkit.JWTConnect("v5-expiring", "", token)
	cp.WillMessage = &paho.WillMessage{Topic: "wills/v5", Payload: []byte("v5 gone"), QoS: 1}
	c, ca := connectV5(t, b.addr, cp)
	if ca.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
	}
	td := c.NextDisconnect(t, time.Until(deadline)+2*time.Second)
	checkOnTime(t, "DISCONNECT", td.At, deadline)
	if td.ReasonCode != 0xA0 || td.Properties == nil || td.Properties.ReasonString != "token expired" {
		t.Fatalf("DISCONNECT 0x%02X %+v, want 0xA0 \"token expired\"", td.ReasonCode, td.Properties)
	}
	expectWillOnce(t, watcher, "wills/v5", "v5 gone")
	testkit.Eventually(t, 10*time.Second, func() bool { return b.hook.armed.Load() == 1 }, "expiry timers armed: %d, want %d", b.hook.armed.Load(), 1) // the watcher's
}

func TestExpiryClosesV3AndPublishesWill(t *testing.T) {
	b := startBrokerWith(t, Options{Config: localConfig()}, &allowAllACL{})
	watcher := subscribeV5(t, b, "watcher", "wills/#")
	token, deadline := mintLocal(t, b.hook, "bob", 2*time.Second, nil)
	lost := make(chan time.Time, 1)
	opts := testkit.V3Options("tcp://"+b.addr, "v3-expiring", "jwt", token).
		SetWill("wills/v3", "v3 gone", 1, false).
		SetConnectionLostHandler(func(paho3.Client, error) { lost <- time.Now() })
	if _, code, err := testkit.ConnectV3(t, opts); err != nil {
		t.Fatalf("v3 connect: CONNACK %d, %v", code, err)
	}
	select {
	case at := <-lost:
		checkOnTime(t, "connection closed", at, deadline)
	case <-time.After(time.Until(deadline) + 2*time.Second):
		t.Fatal("v3 connection still open after the token expired")
	}
	expectWillOnce(t, watcher, "wills/v3", "v3 gone")
}

func expectWillOnce(t *testing.T, watcher *testkit.V5Client, topic, payload string) {
	t.Helper()
	select {
	case m := <-watcher.Received:
		if m.Topic != topic || string(m.Payload) != payload {
			t.Fatalf("got %s %q, want the Will %s %q", m.Topic, m.Payload, topic, payload)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the Will was not published")
	}
	if n := countFor(watcher, 300*time.Millisecond); n != 0 {
		t.Fatalf("the Will was published %d more times", n)
	}
}

// A graceful DISCONNECT from the client still means no Will, timer or not.
func TestClientDisconnectStopsTimerWithoutWill(t *testing.T) {
	b := startBrokerWith(t, Options{Config: localConfig()}, &allowAllACL{})
	watcher := subscribeV5(t, b, "watcher", "wills/#")
	token, _ := mintLocal(t, b.hook, "carol", time.Hour, nil)
	cp := testkit.JWTConnect("leaving", "", token)
	cp.WillMessage = &paho.WillMessage{Topic: "wills/leaving", Payload: []byte("x")}
	c, _ := connectV5(t, b.addr, cp)
	testkit.Eventually(t, 10*time.Second, func() bool { return b.hook.armed.Load() == 2 }, "expiry timers armed: %d, want %d", b.hook.armed.Load(), 2)
	_ = c.Disconnect(&paho.Disconnect{})
	testkit.Eventually(t, 10*time.Second, func() bool { return b.hook.armed.Load() == 1 }, "expiry timers armed: %d, want %d", b.hook.armed.Load(), 1)
	if n := countFor(watcher, 300*time.Millisecond); n != 0 {
		t.Fatal("Will published after a graceful DISCONNECT")
	}
}

func TestTakeoverNotDisconnectedByOldTimer(t *testing.T) {
	b := startBrokerWith(t, Options{Config: localConfig()})
	short, deadline := mintLocal(t, b.hook, "dave", 2*time.Second, nil)
	long, _ := mintLocal(t, b.hook, "dave", time.Hour, nil)
	expiry := uint32(300)
	persist := func(cp *paho.Connect) *paho.Connect {
		cp.CleanStart = false
		cp.Properties.SessionExpiryInterval = &expiry
		return cp
	}
	old, ca := connectV5(t, b.addr, persist(testkit.JWTConnect("device-7", "", short)))
	if ca.ReasonCode != 0 {
		t.Fatalf("old CONNACK 0x%02X", ca.ReasonCode)
	}
	newer, ca := connectV5(t, b.addr, persist(testkit.JWTConnect("device-7", "", long)))
	if ca.ReasonCode != 0 {
		t.Fatalf("new CONNACK 0x%02X", ca.ReasonCode)
	}
	if td := old.NextDisconnect(t, 5*time.Second); td.ReasonCode != packets.ErrSessionTakenOver.Code {
		t.Fatalf("old connection: DISCONNECT 0x%02X, want 0x8E", td.ReasonCode)
	}
	newer.NoDisconnect(t, time.Until(deadline)+time.Second) // past the older token's expiry
	cl, ok := b.server.Clients.Get("device-7")
	if !ok || cl.Closed() {
		t.Fatal("the newer connection is gone")
	}
	if id, ok := b.hook.Identity(cl); !ok || id.ExpiresAt.Sub(time.Now()) < 50*time.Minute {
		t.Fatalf("newer connection's identity = %+v", id)
	}
	if got := b.hook.armed.Load(); got != 1 {
		t.Fatalf("%d timers armed, want 1 (the newer connection's)", got)
	}
}

// refuseAllConnect stands for a hook after authhook that refuses the CONNECT (the ACL hook's Will check).
type refuseAllConnect struct{ mqtt.HookBase }

func (*refuseAllConnect) ID() string           { return "test-refuse" }
func (*refuseAllConnect) Provides(b byte) bool { return b == mqtt.OnConnect }
func (*refuseAllConnect) OnConnect(*mqtt.Client, packets.Packet) error {
	return packets.ErrNotAuthorized
}

func TestNoTimerLeaks(t *testing.T) {
	t.Run("connect and disconnect", func(t *testing.T) {
		b := startBrokerWith(t, Options{Config: localConfig()})
		baseline := runtime.NumGoroutine()
		const n = 50
		var clients []*testkit.V5Client
		for i := range n {
			token, _ := mintLocal(t, b.hook, fmt.Sprintf("user-%d", i), time.Hour, nil)
			c, ca := connectV5(t, b.addr, testkit.JWTConnect(fmt.Sprintf("leak-%d", i), "", token))
			if ca.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
			}
			clients = append(clients, c)
		}
		// Timers are armed just after the CONNACK is written.
		testkit.Eventually(t, 10*time.Second, func() bool { return b.hook.armed.Load() == n }, "expiry timers armed: %d, want %d", b.hook.armed.Load(), n)
		for _, c := range clients {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		testkit.Eventually(t, 10*time.Second, func() bool { return b.hook.armed.Load() == 0 && runtime.NumGoroutine() <= baseline }, "timers or goroutines left: %d armed, %d goroutines, baseline %d", b.hook.armed.Load(), runtime.NumGoroutine(), baseline)
		sessions := 0
		b.hook.sessions.Range(func(_, _ any) bool { sessions++; return true })
		if sessions != 0 {
			t.Fatalf("%d sessions kept after every client left", sessions)
		}
	})
	t.Run("hook closed", func(t *testing.T) {
		b := startBrokerWith(t, Options{Config: localConfig()})
		token, _ := mintLocal(t, b.hook, "frank", time.Hour, nil)
		if _, ca := connectV5(t, b.addr, testkit.JWTConnect("closing", "", token)); ca.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
		}
		testkit.Eventually(t, 10*time.Second, func() bool { return b.hook.armed.Load() == 1 }, "expiry timers armed: %d, want %d", b.hook.armed.Load(), 1)
		_ = b.hook.Stop()
		if got := b.hook.armed.Load(); got != 0 {
			t.Fatalf("%d timers armed after Close", got)
		}
	})
	t.Run("refused by a later hook", func(t *testing.T) {
		b := startBrokerWith(t, Options{Config: localConfig()}, &refuseAllConnect{})
		token, _ := mintLocal(t, b.hook, "eve", time.Hour, nil)
		if conn, _, err := rawConnect(b.addr, "refused", token); err == nil {
			conn.Close()
			t.Fatal("the refusing hook let the client in")
		}
		// OnConnect attached an identity (held weakly, gone with the client); reading it also orders this
		// goroutine after the server's, which keeps mochi's Close from racing its WaitGroup.Add.
		attached := 0
		b.hook.sessions.Range(func(_, _ any) bool { attached++; return true })
		if attached > 1 {
			t.Fatalf("%d sessions for one refused client", attached)
		}
		if got := b.hook.armed.Load(); got != 0 {
			t.Fatalf("%d timers armed for a refused CONNECT", got)
		}
	})
}

// ---- scale: a minimal MQTT 5 client, since 5,000 paho clients would cost more than the broker ----

func rawConnect(addr, clientID, token string) (net.Conn, *bufio.Reader, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 300, ClientIdentifier: clientID,
			PasswordFlag: true, Password: []byte(token)}}
	if err := wire.WritePacket(conn, &pk); err != nil {
		conn.Close()
		return nil, nil, err
	}
	r := bufio.NewReaderSize(conn, 256)
	ack, err := wire.ReadPacket(r, 5)
	if err != nil || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		conn.Close()
		return nil, nil, fmt.Errorf("CONNACK %+v: %v", ack.FixedHeader, err)
	}
	return conn, r, nil
}

// 5,000 connections whose credentials expire over 20 s are each disconnected within a second of exp+leeway,
// and every timer and goroutine is gone afterwards.
func TestExpiryAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test: 5,000 connections, ~30 s")
	}
	const (
		clients = 5000
		spread  = 20 // distinct expiry seconds
		lead    = 10 * time.Second
	)
	b := startBrokerWith(t, Options{Config: localConfig()})
	baseline := runtime.NumGoroutine()
	// One credential per expiry second, shared by many client ids: the cache keeps CONNECT cheap, so the test
	// measures the timers rather than signature checks.
	tokens := make([]string, spread)
	deadlines := make([]time.Time, spread)
	for k := range spread {
		tokens[k], deadlines[k] = mintLocal(t, b.hook, fmt.Sprintf("fleet-%d", k), lead+time.Duration(k)*time.Second, nil)
	}
	firstDeadline := slices.MinFunc(deadlines, func(a, b time.Time) int { return a.Compare(b) })

	type result struct {
		code byte
		late time.Duration
		err  error
	}
	results := make(chan result, clients)
	jobs := make(chan int)
	var connecting sync.WaitGroup
	var connectErr error
	var errOnce sync.Once
	start := time.Now()
	for range 32 {
		connecting.Add(1)
		go func() {
			defer connecting.Done()
			for i := range jobs {
				k := i % spread
				conn, r, err := rawConnect(b.addr, fmt.Sprintf("fleet-%d", i), tokens[k])
				if err != nil {
					errOnce.Do(func() { connectErr = err })
					continue
				}
				go func() {
					defer conn.Close()
					pk, err := wire.ReadPacket(r, 5)
					at := time.Now()
					if err == nil && pk.FixedHeader.Type != packets.Disconnect {
						err = fmt.Errorf("got packet type %d, want DISCONNECT", pk.FixedHeader.Type)
					}
					if err == nil {
						_, err = r.ReadByte() // the server closes after the DISCONNECT
						if err == io.EOF {
							err = nil
						} else if err == nil {
							err = fmt.Errorf("data after DISCONNECT")
						}
					}
					results <- result{code: pk.ReasonCode, late: at.Sub(deadlines[k]), err: err}
				}()
			}
		}()
	}
	for i := range clients {
		jobs <- i
	}
	close(jobs)
	connecting.Wait()
	if connectErr != nil {
		t.Fatalf("connecting: %v", connectErr)
	}
	connected := time.Now()
	t.Logf("%d clients connected in %s", clients, connected.Sub(start).Round(time.Millisecond))
	if connected.After(firstDeadline) {
		t.Fatalf("connecting took %s, longer than the first credential's life", connected.Sub(start))
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return b.hook.armed.Load() == clients }, "expiry timers armed: %d, want %d", b.hook.armed.Load(), clients)

	lateness := make([]time.Duration, 0, clients)
	timeout := time.After(time.Until(deadlines[spread-1]) + 5*time.Second)
	for range clients {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.code != packets.ErrMaxConnectTime.Code {
				t.Fatalf("DISCONNECT 0x%02X, want 0xA0", r.code)
			}
			lateness = append(lateness, r.late)
		case <-timeout:
			t.Fatalf("only %d of %d clients were disconnected", len(lateness), clients)
		}
	}
	slices.Sort(lateness)
	p50, p99, worst := lateness[len(lateness)/2], lateness[len(lateness)*99/100], lateness[len(lateness)-1]
	t.Logf("lateness after exp+leeway over %d clients: p50 %s, p99 %s, max %s, min %s", clients,
		p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), worst.Round(100*time.Microsecond), lateness[0].Round(100*time.Microsecond))
	if lateness[0] < 0 {
		t.Fatalf("a client was disconnected %s before its credential expired", -lateness[0])
	}
	if worst > time.Second {
		t.Fatalf("a client was disconnected %s after exp+leeway, want at most 1s", worst)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return b.hook.armed.Load() == 0 && runtime.NumGoroutine() <= baseline }, "timers or goroutines left: %d armed, %d goroutines, baseline %d", b.hook.armed.Load(), runtime.NumGoroutine(), baseline)
}

// ---- the expiry queue on its own: sessions without connections, deadlines in real time ----

// queueHook is a Hook with only what the expiry queue uses; its clock stands still at now.
func queueHook(now time.Time) *Hook {
	h := &Hook{now: func() time.Time { return now }, log: slog.New(slog.DiscardHandler)}
	h.set.Store(newProviderSet(Config{}))
	return h
}

// queuedSessions makes n sessions whose identities expire from first on, one millisecond apart.
func queuedSessions(n int, first time.Time) []*session {
	out := make([]*session, n)
	for i := range out {
		out[i] = &session{slot: -1}
		out[i].id.Store(&Identity{ExpiresAt: first.Add(time.Duration(i) * time.Millisecond)})
	}
	return out
}

func armAll(h *Hook, sessions []*session) {
	for _, s := range sessions {
		s.mu.Lock()
		h.armLocked(s, s.id.Load())
		s.mu.Unlock()
	}
}

// Arming 10,000 sessions, re-arming them and taking them out again allocates nothing once the queue has
// grown: no runtime timer (time.AfterFunc allocates one per call) and no goroutine per session.
func TestExpiryQueueArmsNoTimerPerSession(t *testing.T) {
	const n = 10_000
	now := time.Now()
	h := queueHook(now)
	defer h.expiry.close(h)
	sessions := queuedSessions(n, now.Add(time.Hour))
	goroutines := runtime.NumGoroutine()
	allocs := testing.AllocsPerRun(3, func() {
		armAll(h, sessions)
		armAll(h, sessions) // re-arm: what re-authentication does
		for _, s := range sessions {
			s.mu.Lock()
			h.stopTimerLocked(s)
			s.mu.Unlock()
		}
	})
	if allocs != 0 {
		t.Fatalf("arming, re-arming and removing %d sessions allocated %.0f times, want 0", n, allocs)
	}
	armAll(h, sessions)
	if got := h.armed.Load(); got != n {
		t.Fatalf("%d sessions armed, want %d", got, n)
	}
	if got := runtime.NumGoroutine(); got > goroutines {
		t.Fatalf("%d goroutines with %d sessions armed, %d before", got, n, goroutines)
	}
}

// Deadlines end sessions in order; a re-armed session ends at its new deadline, a removed one never.
func TestExpiryQueueOrderRearmRemove(t *testing.T) {
	now := time.Now()
	h := queueHook(now)
	defer h.expiry.close(h)
	sessions := queuedSessions(4, now.Add(50*time.Millisecond)) // 50, 51, 52, 53 ms
	rearmed, removed, first, last := sessions[0], sessions[1], sessions[2], sessions[3]
	armAll(h, sessions)

	renewed := &Identity{ExpiresAt: now.Add(time.Hour)}
	rearmed.mu.Lock()
	rearmed.id.Store(renewed)
	h.armLocked(rearmed, renewed)
	rearmed.mu.Unlock()
	removed.mu.Lock()
	h.stopTimerLocked(removed)
	removed.mu.Unlock()

	ended := func(s *session) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ending
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return ended(first) && ended(last) }, "the first and last queued sessions did not both end")
	if ended(rearmed) || ended(removed) {
		t.Fatalf("re-armed session ended: %v, removed session ended: %v; want neither", ended(rearmed), ended(removed))
	}
	if got := h.armed.Load(); got != 1 {
		t.Fatalf("%d sessions armed, want 1 (the re-armed one)", got)
	}
	if rearmed.slot != 0 {
		t.Fatalf("re-armed session at heap slot %d, want 0", rearmed.slot)
	}
}

// BenchmarkExpiryArm: (re)arming one session's deadline among 10,000 armed ones with the queue, against a
// time.AfterFunc per session (the design it replaced) timed over the same b.N just before (timer stopped):
// x-afterfunc is queue time / AfterFunc time; allocs/op are the queue's.
func BenchmarkExpiryArm(b *testing.B) {
	const others = 10_000
	now := time.Now()
	for _, rearm := range []bool{false, true} {
		name := "arm+remove"
		if rearm {
			name = "rearm"
		}
		b.Run(name, func(b *testing.B) {
			b.StopTimer()
			baseline := afterFuncArms(b.N, others, rearm)

			h := queueHook(now)
			defer h.expiry.close(h)
			armAll(h, queuedSessions(others, now.Add(time.Hour)))
			ids := make([]*Identity, 1000) // deadlines spread over the others'
			for i := range ids {
				ids[i] = &Identity{ExpiresAt: now.Add(time.Hour + time.Duration(i*others/len(ids))*time.Millisecond)}
			}
			s := &session{slot: -1}
			if rearm {
				s.id.Store(ids[0])
				armAll(h, []*session{s})
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.StartTimer()
			for i := range b.N {
				id := ids[i%len(ids)]
				s.mu.Lock()
				h.armLocked(s, id)
				if !rearm {
					h.stopTimerLocked(s)
				}
				s.mu.Unlock()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed())/float64(baseline), "x-afterfunc")
		})
	}
}

// afterFuncArms times n (re)arms of the replaced design, a runtime timer per session stopped and recreated
// on re-arm, among others armed timers.
func afterFuncArms(n, others int, rearm bool) time.Duration {
	fire := func() {}
	for range others {
		t := time.AfterFunc(time.Hour, fire)
		defer t.Stop()
	}
	var mu sync.Mutex
	var timer *time.Timer
	if rearm {
		timer = time.AfterFunc(time.Hour, fire)
	}
	start := time.Now()
	for i := range n {
		mu.Lock()
		d := time.Hour + time.Duration(i%1000*others/1000)*time.Millisecond
		if rearm {
			timer.Stop()
			timer = time.AfterFunc(d, fire)
		} else {
			timer = time.AfterFunc(d, fire)
			timer.Stop()
		}
		mu.Unlock()
	}
	elapsed := time.Since(start)
	if timer != nil {
		timer.Stop()
	}
	return elapsed
}
