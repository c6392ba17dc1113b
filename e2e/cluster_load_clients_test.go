package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/idmq/idmq/internal/testkit"
)

// The clients of TestClusterKillUnderLoad: publishers that count what was acknowledged, subscribers that count
// what arrived.

// loadPublisher publishes "name/seq" on users/alice/load/name, loadInflight at a time, and records each
// payload whose publish was acknowledged. A connection the broker ends (a publish it could not store) is
// replaced by a new one to the same node; unacknowledged messages are not sent again, so they are neither
// expected nor counted.
type loadPublisher struct {
	t         *testing.T
	node      *idmqProc
	token     string
	name      string
	qos       byte
	seq       atomic.Int64
	killedAt  atomic.Int64 // unix ns; 0 before the kill
	afterKill atomic.Int64 // publishes sent after the kill and acknowledged
	firstBack atomic.Int64 // unix ns of the first of those
	lastErr   atomic.Pointer[string]
	conns     atomic.Int64 // connections made

	mu    sync.Mutex
	acked map[string]time.Time // payload -> when its ack arrived
}

func (p *loadPublisher) setErr(err error) {
	msg := err.Error()
	p.lastErr.Store(&msg)
}

func (p *loadPublisher) lastError() string {
	if e := p.lastErr.Load(); e != nil {
		return *e
	}
	return "none"
}

func (p *loadPublisher) ackCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

func (p *loadPublisher) run(ctx context.Context) {
	for ctx.Err() == nil {
		t0 := time.Now()
		c, err := connectLoad(p.t, p.node, p.name, p.token, true)
		if err != nil {
			p.setErr(fmt.Errorf("connect after %s: %w", time.Since(t0).Round(time.Millisecond), err))
			time.Sleep(200 * time.Millisecond) // the node may refuse (0x88) while the cluster re-elects
			continue
		}
		if p.conns.Add(1) > 1 && time.Since(t0) > time.Second {
			p.setErr(fmt.Errorf("reconnect took %s", time.Since(t0).Round(time.Millisecond)))
		}
		// One failed publish ends the connection, and so does the broker closing it; the acks still awaited cannot
		// come any more, so their publishes stop waiting (paho keeps them for a resend until its packet timeout).
		broken, breakConn := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.Done():
				breakConn()
			case <-broken.Done():
			}
		}()
		var wg sync.WaitGroup
		for range loadInflight {
			wg.Go(func() { p.publishUntilBroken(ctx, broken, breakConn, c) })
		}
		wg.Wait()
		breakConn()
		_ = c.Conn.Close()
	}
}

func (p *loadPublisher) publishUntilBroken(ctx, broken context.Context, breakConn func(), c *testkit.V5Client) {
	for ctx.Err() == nil && broken.Err() == nil {
		select {
		case <-c.Done():
			return
		default:
		}
		payload := fmt.Sprintf("%s/%d", p.name, p.seq.Add(1))
		sent := time.Now().UnixNano()
		pctx, cancel := context.WithTimeout(broken, loadAckWait) // not ctx: a stop must not cut an ack off
		resp, err := c.Publish(pctx, &paho.Publish{Topic: "users/alice/load/" + p.name, QoS: p.qos, Payload: []byte(payload)})
		cancel()
		if err != nil || resp == nil || resp.ReasonCode >= 0x80 {
			if broken.Err() == nil {
				p.setErr(fmt.Errorf("publish: %v (resp %+v)", err, resp))
			}
			breakConn() // start over on a new connection; this one's packet ids are in doubt
			_ = c.Conn.Close()
			return
		}
		p.mu.Lock()
		p.acked[payload] = time.Now()
		p.mu.Unlock()
		if k := p.killedAt.Load(); k != 0 && sent > k {
			if p.afterKill.Add(1) == 1 {
				p.firstBack.Store(time.Now().UnixNano())
			}
		}
	}
}

// connectLoad connects alice as id to node p without failing the test (the caller retries); its Received
// channel is read by the caller.
func connectLoad(t *testing.T, p *idmqProc, id, token string, clean bool) (*testkit.V5Client, error) {
	return connectLoadSession(t, p, id, token, clean, nil)
}

// connectLoadSession is connectLoad keeping the client's session state in sess (see testkit.ConnectV5Session).
func connectLoadSession(t *testing.T, p *idmqProc, id, token string, clean bool, sess session.SessionManager) (*testkit.V5Client, error) {
	conn, err := net.DialTimeout("tcp", p.addr("tcp"), 5*time.Second)
	if err != nil {
		return nil, err
	}
	cp := &paho.Connect{ClientID: id, CleanStart: clean, Username: "alice", UsernameFlag: true,
		Password: []byte(token), PasswordFlag: true}
	if !clean {
		expiry := uint32(600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	c, ca, err := testkit.ConnectV5Session(t, conn, cp, sess)
	if err != nil {
		if ca != nil {
			return nil, fmt.Errorf("CONNACK 0x%02x: %w", ca.ReasonCode, err)
		}
		return nil, err
	}
	return c, nil
}

// loadSubscriber counts what one subscription to loadFilter at QoS 2 receives, by payload. A persistent one
// keeps its client session state across connections, as a real client does.
type loadSubscriber struct {
	name  string
	token string
	state *state.State // nil for a clean session
	t     *testing.T
	node  *idmqProc    // where a moved subscriber reconnects when the broker ends its connection
	again atomic.Int64 // such reconnections
	mu    sync.Mutex
	got   map[string]delivery
	c     *testkit.V5Client
	done  chan struct{}
	wg    sync.WaitGroup
}

type delivery struct {
	count int
	qos   byte
}

func newLoadSubscriber(t *testing.T, p *idmqProc, token, name string, clean bool) *loadSubscriber {
	t.Helper()
	s := &loadSubscriber{t: t, name: name, token: token, got: map[string]delivery{}, done: make(chan struct{})}
	var sess session.SessionManager
	if !clean {
		s.state = state.NewInMemory()
		sess = s.state
	}
	c, err := connectLoadSession(t, p, name, token, clean, sess)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	subscribe(t, c, loadFilter, 2)
	s.follow(c)
	return s
}

// follow reads c's messages until close. A moved subscriber whose connection the broker ends (its node
// could not store the session's QoS 2 state while the cluster recovered: nothing is lost, the client resumes)
// connects again to the same node, as a real client does; it is counted.
func (s *loadSubscriber) follow(c *testkit.V5Client) {
	s.mu.Lock()
	s.c = c
	s.mu.Unlock()
	s.wg.Go(func() {
		var ended <-chan struct{} // only a moved subscriber watches its connection end
		if s.node != nil {
			ended = c.Done()
		}
		for {
			select {
			case <-ended:
				for drained := false; !drained; { // what arrived before the end
					select {
					case pb := <-c.Received:
						s.count(pb)
					default:
						drained = true
					}
				}
				if c = s.connectAgain(); c == nil {
					return
				}
				ended = c.Done()
			case pb := <-c.Received:
				s.count(pb)
			case <-s.done:
				return
			}
		}
	})
}

func (s *loadSubscriber) count(pb *paho.Publish) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.got[string(pb.Payload)]
	d.count++
	d.qos = pb.QoS
	s.got[string(pb.Payload)] = d
}

// reconnect resumes the subscriber's persistent session on node p (its node was killed).
func (s *loadSubscriber) reconnect(t *testing.T, p *idmqProc) {
	t.Helper()
	close(s.done)
	s.wg.Wait()
	s.done = make(chan struct{})
	var c *testkit.V5Client
	var err error
	testkit.Eventually(t, 15*time.Second, func() bool {
		c, err = connectLoadSession(t, p, s.name, s.token, false, s.state)
		return err == nil
	}, "%s reconnecting to a survivor", s.name)
	s.node = p
	s.follow(c)
}

// connectAgain resumes the moved subscriber's session on its node again; nil once the subscriber closes.
func (s *loadSubscriber) connectAgain() *testkit.V5Client {
	for {
		select {
		case <-s.done:
			return nil
		default:
		}
		c, err := connectLoadSession(s.t, s.node, s.name, s.token, false, s.state)
		if err == nil {
			s.again.Add(1)
			s.mu.Lock()
			s.c = c
			s.mu.Unlock()
			return c
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// conn is the subscriber's current connection.
func (s *loadSubscriber) conn() *testkit.V5Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

func (s *loadSubscriber) snapshot() map[string]delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]delivery, len(s.got))
	for k, v := range s.got {
		out[k] = v
	}
	return out
}

// describeMissing summarises missing payloads per publisher: how many, their sequence range and when (relative
// to the kill) their acks arrived.
func describeMissing(missing []string, acked map[string]time.Time, killed time.Time) string {
	type span struct {
		n, lo, hi   int
		first, last time.Duration
	}
	by := map[string]*span{}
	for _, k := range missing {
		name, seqText, _ := strings.Cut(k, "/")
		seq, _ := strconv.Atoi(seqText)
		at := acked[k].Sub(killed)
		sp := by[name]
		if sp == nil {
			sp = &span{lo: seq, hi: seq, first: at, last: at}
			by[name] = sp
		}
		sp.n++
		sp.lo, sp.hi = min(sp.lo, seq), max(sp.hi, seq)
		sp.first, sp.last = min(sp.first, at), max(sp.last, at)
	}
	var out []string
	for name, sp := range by {
		out = append(out, fmt.Sprintf("%s: %d in seq %d..%d, acknowledged %s..%s after the kill", name, sp.n, sp.lo, sp.hi,
			sp.first.Round(time.Millisecond), sp.last.Round(time.Millisecond)))
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// awaitAll waits until every payload of want arrived, up to within; it returns those still missing.
func (s *loadSubscriber) awaitAll(want map[string]time.Time, within time.Duration) []string {
	deadline := time.Now().Add(within)
	for {
		var missing []string
		s.mu.Lock()
		for k := range want {
			if s.got[k].count == 0 {
				missing = append(missing, k)
			}
		}
		s.mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(quietSub)
	}
}

func (s *loadSubscriber) close() {
	close(s.done)
	s.wg.Wait()
}
