package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// TestKill9LosesNoAcknowledgedMessage kills the broker (SIGKILL) at a random moment under QoS 1 and QoS 2
// load with the bolt store, restarts it on the same data_dir, and checks that every message a publisher
// had acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2) reaches each persistent subscriber, that no QoS 2
// delivery is duplicated, and that the retained message is not older than the last acknowledged one.
// IDMQ_CRASH_RUNS sets the number of crashes (3 by default; RELIABILITY.md documents 20).
func TestKill9LosesNoAcknowledgedMessage(t *testing.T) {
	runs := 3
	if v := os.Getenv("IDMQ_CRASH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("IDMQ_CRASH_RUNS=%q: want a positive integer", v)
		}
		runs = n
	}
	for i := range runs {
		t.Run(fmt.Sprintf("run%02d", i+1), func(t *testing.T) { crashRun(t) })
	}
}

const crashTopicPrefix = "users/alice/crash/"

// crashPublisher is one publisher's configuration in the load.
type crashPublisher struct {
	id     string
	qos    byte
	topic  string
	retain bool
}

func crashRun(t *testing.T) {
	p := newIdmq(t, localTCP)
	p.start()
	tok := p.token("alice")
	addr := p.addr("tcp")

	subs := []*crashSub{
		newCrashSub("crash-sub-q1", crashTopicPrefix+"#", 1, tok),
		newCrashSub("crash-sub-q2", crashTopicPrefix+"#", 2, tok),
	}
	for _, s := range subs {
		s.connect(t, addr, false)
	}

	pubs := []crashPublisher{
		{id: "crash-pub-1a", qos: 1, topic: crashTopicPrefix + "1a"},
		{id: "crash-pub-1b", qos: 1, topic: crashTopicPrefix + "1b"},
		{id: "crash-pub-2a", qos: 2, topic: crashTopicPrefix + "2a"},
		{id: "crash-pub-2b", qos: 2, topic: crashTopicPrefix + "2b"},
		{id: "crash-pub-ret", qos: 1, topic: "users/alice/retained/crash", retain: true},
	}
	acked := newAckLog()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, pc := range pubs {
		c, code := connectV3(t, v3Options(p.brokerURL("tcp"), pc.id, "alice", tok, nil))
		if code != 0 {
			t.Fatalf("publisher %s CONNACK %d", pc.id, code)
		}
		wg.Add(1)
		go func() { defer wg.Done(); crashPublish(c, pc, acked, stop) }()
	}
	resumer := newCrashResumer("crash-pub-2r", crashTopicPrefix+"2r", tok, acked)
	resumer.connect(t, addr)
	wg.Add(1)
	go func() { defer wg.Done(); resumer.publish(stop) }()

	// Kill once the load is under way, at a random moment.
	loadStart := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for acked.count() < 60 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Duration(rand.IntN(700)) * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	t.Logf("killed after %s of load", time.Since(loadStart).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	if acked.count() == 0 {
		t.Fatal("no message was acknowledged before the kill: the load never ran")
	}
	for _, s := range subs {
		s.waitDisconnected(t)
	}

	p.start()
	for _, s := range subs {
		if present := s.connect(t, addr, true); !present {
			t.Fatalf("%s: session not present after restart", s.id)
		}
	}
	// The QoS 2 publisher finishes what the kill interrupted; those PUBCOMPs acknowledge messages too.
	<-resumer.done
	if present := resumer.connect(t, addr); !present {
		t.Fatalf("%s: session not present after restart", resumer.id)
	}
	for end := time.Now().Add(15 * time.Second); resumer.unfinished() > 0 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := resumer.unfinished(); n > 0 {
		t.Errorf("%s: %d QoS 2 messages still unfinished 15s after resuming", resumer.id, n)
	}

	// Every acknowledged message, to each subscriber; QoS 2 deliveries never twice.
	ackedSet := acked.snapshot()
	for _, s := range subs {
		missing := s.waitFor(ackedSet, 30*time.Second)
		// Resends of restored in-flight messages go out at CONNACK; give late duplicates a moment to show.
		time.Sleep(500 * time.Millisecond)
		st := s.stats(ackedSet)
		t.Logf("%s: acknowledged %d (QoS 1 %d, QoS 2 %d), delivered %d distinct, QoS 1 duplicates %d, QoS 2 duplicates %d, missing %d",
			s.id, len(ackedSet), st.ackedQoS1, st.ackedQoS2, st.distinct, st.dupQoS1, st.dupQoS2, len(missing))
		if len(missing) > 0 {
			t.Errorf("%s: %d acknowledged messages never delivered after kill -9, e.g. %v", s.id, len(missing), first(missing, 10))
		}
		if len(st.dupQoS2List) > 0 {
			t.Errorf("%s: QoS 2 messages delivered more than once: %v", s.id, first(st.dupQoS2List, 10))
		}
	}
	if m := regexp.MustCompile(`write-ahead log replayed[^\n]*`).FindString(p.logs.String()); m != "" {
		t.Logf("broker: %s", m)
	}

	// The retained message is the last acknowledged one or a later one that was in flight at the kill.
	lastRet := acked.lastSeq("crash-pub-ret")
	late := newCollectV3()
	c, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "crash-retained-check", "alice", tok, nil))
	waitToken(t, c.Subscribe("users/alice/retained/crash", 1, late.handler), "subscribe retained")
	m := late.expect(t, "users/alice/retained/crash", 10*time.Second)
	if seq := payloadSeq(string(m.Payload())); seq < lastRet {
		t.Errorf("retained message after restart is %q, older than the last acknowledged (seq %d)", m.Payload(), lastRet)
	}
}

// crashPublish publishes unique payloads "<client>-<seq>" with up to 16 unacknowledged at once until stop,
// recording each one whose PUBACK/PUBCOMP arrived.
func crashPublish(c mqtt3.Client, pc crashPublisher, acked *ackLog, stop <-chan struct{}) {
	window := make(chan struct{}, 16)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return
		case window <- struct{}{}:
		}
		payload := fmt.Sprintf("%s-%d", pc.id, seq)
		tok := c.Publish(pc.topic, pc.qos, pc.retain, payload)
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			defer func() { <-window }()
			if tok.WaitTimeout(15*time.Second) && tok.Error() == nil {
				acked.add(pc, payload, seq)
			}
		}()
	}
}

// ackLog is every payload a publisher saw acknowledged, with the QoS it was published at.
type ackLog struct {
	mu      sync.Mutex
	qos     map[string]byte // payloads on the subscribers' topics
	lastRet map[string]int  // publisher -> highest acknowledged seq (retained topic)
}

func newAckLog() *ackLog { return &ackLog{qos: map[string]byte{}, lastRet: map[string]int{}} }

func (a *ackLog) add(pc crashPublisher, payload string, seq int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if pc.retain {
		a.lastRet[pc.id] = max(a.lastRet[pc.id], seq)
		return
	}
	a.qos[payload] = pc.qos
}

func (a *ackLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.qos)
}

func (a *ackLog) snapshot() map[string]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]byte, len(a.qos))
	for k, v := range a.qos {
		out[k] = v
	}
	return out
}

func (a *ackLog) lastSeq(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastRet[id]
}

func payloadSeq(payload string) int {
	n, _ := strconv.Atoi(payload[strings.LastIndexByte(payload, '-')+1:])
	return n
}

func first(s []string, n int) []string {
	sort.Strings(s)
	return s[:min(n, len(s))]
}

// crashSub is a persistent MQTT 3.1.1 subscriber that counts deliveries the way a compliant receiver hands
// them to its application. paho.mqtt.golang delivers every QoS 2 PUBLISH it reads, including the resend of
// a packet id it already holds, so it cannot tell a broker's duplicate from a retransmission. This one is
// the QoS 2 receiver of MQTT 3.1.1 section 4.3.3 (Method B): it delivers a PUBLISH whose packet id it does
// not hold, holds the id until PUBREL, answers a retransmission of a held id without delivering it again,
// and keeps that state across reconnects, as the session does. A QoS 2 duplicate is therefore the same
// payload handed to the application twice: a second copy the broker created, or a PUBLISH resent after the
// receiver had already released its packet id.
type crashSub struct {
	id, filter, password string
	qos                  byte

	mu         sync.Mutex
	held       map[uint16]bool // QoS 2 packet ids received, PUBREL not yet
	deliveries map[string]int  // payload -> times delivered to the application
	deliverQoS map[string]byte // payload -> QoS it was delivered at
	done       chan struct{}   // closed when the current connection's reader ends
}

func newCrashSub(id, filter string, qos byte, password string) *crashSub {
	return &crashSub{id: id, filter: filter, qos: qos, password: password,
		held: map[uint16]bool{}, deliveries: map[string]int{}, deliverQoS: map[string]byte{}}
}

// connect opens a clean-session=false connection, subscribes on the first one, and reads in the background.
// It returns CONNACK's session-present flag.
func (s *crashSub) connect(t *testing.T, addr string, resume bool) bool {
	t.Helper()
	conn, r, present := crashDial(t, addr, s.id, s.password)
	if !resume {
		sub := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: s.filter, Qos: s.qos}},
		}
		crashWrite(t, conn, &sub)
		if got := crashRead(t, r); got.FixedHeader.Type != packets.Suback || len(got.ReasonCodes) != 1 || got.ReasonCodes[0] != s.qos {
			t.Fatalf("%s: SUBACK %+v", s.id, got)
		}
	}
	_ = conn.SetDeadline(time.Time{})
	s.done = make(chan struct{})
	go s.read(conn, r, s.done)
	return present
}

// crashDial connects a 3.1.1 client with clean session false and returns CONNACK's session-present flag.
// The connection has a 15 s deadline until the caller clears it.
func crashDial(t *testing.T, addr, clientID, password string) (net.Conn, *bufio.Reader, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := bufio.NewReader(conn)
	connect := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Keepalive: 60,
			UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte(password),
		},
	}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	crashWrite(t, conn, &connect)
	ack := crashRead(t, r)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK %+v", clientID, ack)
	}
	return conn, r, ack.SessionPresent
}

func (s *crashSub) read(conn net.Conn, r *bufio.Reader, done chan struct{}) {
	defer close(done)
	for {
		pk, err := wire.ReadPacket(r, 4)
		if err != nil {
			return
		}
		var reply *packets.Packet
		switch pk.FixedHeader.Type {
		case packets.Publish:
			s.receive(pk)
			switch pk.FixedHeader.Qos {
			case 1:
				reply = &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID, ProtocolVersion: 4}
			case 2:
				reply = &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID, ProtocolVersion: 4}
			}
		case packets.Pubrel:
			s.mu.Lock()
			delete(s.held, pk.PacketID)
			s.mu.Unlock()
			reply = &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID, ProtocolVersion: 4}
		}
		if reply != nil {
			if err := wire.WritePacket(conn, reply); err != nil {
				return
			}
		}
	}
}

func (s *crashSub) receive(pk packets.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pk.FixedHeader.Qos == 2 {
		if s.held[pk.PacketID] {
			return // a retransmission of a message already delivered [MQTT-4.3.3-2]
		}
		s.held[pk.PacketID] = true
	}
	payload := string(pk.Payload)
	s.deliveries[payload]++
	s.deliverQoS[payload] = max(s.deliverQoS[payload], pk.FixedHeader.Qos)
}

func (s *crashSub) waitDisconnected(t *testing.T) {
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still connected 10s after the broker was killed", s.id)
	}
}

// waitFor waits until every acknowledged payload was delivered, and returns those that were not.
func (s *crashSub) waitFor(acked map[string]byte, within time.Duration) []string {
	deadline := time.Now().Add(within)
	for {
		var missing []string
		s.mu.Lock()
		for payload := range acked {
			if s.deliveries[payload] == 0 {
				missing = append(missing, payload)
			}
		}
		s.mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type crashSubStats struct {
	ackedQoS1, ackedQoS2, distinct, dupQoS1, dupQoS2 int
	dupQoS2List                                      []string
}

// stats counts over everything delivered, acknowledged or not: a QoS 2 message the publisher never saw
// completed may arrive, but not twice either.
func (s *crashSub) stats(acked map[string]byte) crashSubStats {
	var st crashSubStats
	for _, q := range acked {
		if q == 1 {
			st.ackedQoS1++
		} else {
			st.ackedQoS2++
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for payload, n := range s.deliveries {
		st.distinct++
		if n < 2 {
			continue
		}
		if s.deliverQoS[payload] == 2 {
			st.dupQoS2 += n - 1
			st.dupQoS2List = append(st.dupQoS2List, fmt.Sprintf("%s x%d", payload, n))
		} else {
			st.dupQoS1 += n - 1
		}
	}
	return st
}

// crashResumer is a QoS 2 publisher with a persistent session that resumes after the restart as MQTT
// 3.1.1 section 4.4 requires: it resends PUBREL for every message that had its PUBREC, and the PUBLISH (DUP)
// for every one that had not. This is the case where mochi alone answers PUBCOMP after a restart for a
// message no subscriber will ever receive (its PUBREC state is stored before the fan-out).
type crashResumer struct {
	id, topic, password string
	acked               *ackLog

	mu       sync.Mutex
	conn     net.Conn
	nextID   uint16
	sent     map[uint16]string // PUBLISH sent, no PUBREC yet
	released map[uint16]string // PUBREL sent, no PUBCOMP yet
	window   chan struct{}
	done     chan struct{}
}

func newCrashResumer(id, topic, password string, acked *ackLog) *crashResumer {
	return &crashResumer{id: id, topic: topic, password: password, acked: acked,
		sent: map[uint16]string{}, released: map[uint16]string{}, window: make(chan struct{}, 16)}
}

// connect (re)connects; on a resumed session it retransmits what is unfinished.
func (c *crashResumer) connect(t *testing.T, addr string) bool {
	t.Helper()
	conn, r, present := crashDial(t, addr, c.id, c.password)
	_ = conn.SetDeadline(time.Time{})
	c.mu.Lock()
	c.conn = conn
	for id := range c.released {
		_ = wire.WritePacket(conn, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id, ProtocolVersion: 4})
	}
	for id, payload := range c.sent {
		_ = wire.WritePacket(conn, c.publishPacket(id, payload, true))
	}
	c.mu.Unlock()
	c.done = make(chan struct{})
	go c.read(r, c.done)
	return present
}

func (c *crashResumer) publishPacket(id uint16, payload string, dup bool) *packets.Packet {
	return &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: dup}, ProtocolVersion: 4,
		TopicName: c.topic, PacketID: id, Payload: []byte(payload),
	}
}

// publish sends unique payloads, up to 16 unfinished, until stop.
func (c *crashResumer) publish(stop <-chan struct{}) {
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return
		case c.window <- struct{}{}:
		}
		payload := fmt.Sprintf("%s-%d", c.id, seq)
		c.mu.Lock()
		c.nextID++
		c.sent[c.nextID] = payload
		err := wire.WritePacket(c.conn, c.publishPacket(c.nextID, payload, false))
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (c *crashResumer) read(r *bufio.Reader, done chan struct{}) {
	defer close(done)
	for {
		pk, err := wire.ReadPacket(r, 4)
		if err != nil {
			return
		}
		c.mu.Lock()
		switch pk.FixedHeader.Type {
		case packets.Pubrec:
			if payload, ok := c.sent[pk.PacketID]; ok {
				delete(c.sent, pk.PacketID)
				c.released[pk.PacketID] = payload
			}
			_ = wire.WritePacket(c.conn, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pk.PacketID, ProtocolVersion: 4})
		case packets.Pubcomp:
			if payload, ok := c.released[pk.PacketID]; ok {
				delete(c.released, pk.PacketID)
				c.acked.add(crashPublisher{id: c.id, qos: 2}, payload, 0)
				<-c.window
			}
		}
		c.mu.Unlock()
	}
}

// unfinished is how many messages still wait for PUBREC or PUBCOMP.
func (c *crashResumer) unfinished() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sent) + len(c.released)
}

func crashWrite(t *testing.T, conn net.Conn, pk *packets.Packet) {
	t.Helper()
	if err := wire.WritePacket(conn, pk); err != nil {
		t.Fatal(err)
	}
}

func crashRead(t *testing.T, r *bufio.Reader) packets.Packet {
	t.Helper()
	pk, err := wire.ReadPacket(r, 4)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}
