package aclhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/refusal"
)

// ID is the hook's mochi ID.
const ID = "idmq-acl"

// SubjectFunc says who a connected client is; false means unknown, and an unknown client is denied
// everything. It is called at CONNECT (after the authentication hook) and by Refresh.
// Subject.ClientID may be left empty: the client's id is used.
type SubjectFunc func(cl *mqtt.Client) (Subject, bool)

// Options configure a Hook.
type Options struct {
	Config     Config
	Subject    SubjectFunc
	Server     *mqtt.Server          // sends the CONNACK refusing a forbidden Will topic
	Registerer prometheus.Registerer // optional; idmq_acl_denied_total{action} is registered here
	Logger     *slog.Logger          // optional; slog.Default()
	Now        func() time.Time      // optional; time.Now (paces the denial log lines)
}

// Hook is the mochi hook enforcing the ACL. Add it with server.AddHook(h, nil) after the
// authentication hook, and never beside an allow-all hook: mochi ORs ACL answers across hooks.
//
// Every deny increments idmq_acl_denied_total{action}: "publish" (inbound PUBLISH), "subscribe"
// (SUBSCRIBE filters and deliveries, which mochi checks alike) or "will" (a Will topic at CONNECT or
// Refresh), and is logged at debug level with the rule that decided ("rules[3]", "default deny").
type Hook struct {
	mqtt.HookBase

	rules   atomic.Pointer[Rules] // replaced whole by Reload
	subject SubjectFunc
	server  *mqtt.Server
	logger  *slog.Logger
	denyLog *denyLog
	denied  map[string]prometheus.Counter // by action label; read-only after New

	// clients maps *mqtt.Client to its *ClientRules. sync.Map reads take no lock, so the
	// publisher goroutines that call OnACLCheck never contend with each other or with connects.
	clients sync.Map

	sweepEvery time.Duration
	stop       chan struct{}
	stopOnce   sync.Once
	started    atomic.Bool
	sweeper    sync.WaitGroup
}

var _ mqtt.Hook = (*Hook)(nil)

// Metric action labels.
const (
	labelPublish   = "publish"
	labelSubscribe = "subscribe" // SUBSCRIBE filters and the deliveries they would receive
	labelWill      = "will"
)

// New validates the configuration and builds the hook.
func New(opts Options) (*Hook, error) {
	rules, err := NewRules(opts.Config)
	if err != nil {
		return nil, err
	}
	if opts.Subject == nil {
		return nil, errors.New("aclhook: Options.Subject is required")
	}
	if opts.Server == nil {
		return nil, errors.New("aclhook: Options.Server is required (it refuses forbidden Will topics)")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "idmq_acl_denied_total",
		Help: "Requests denied by the ACL, by action (publish, subscribe, will).",
	}, []string{"action"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(vec); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("aclhook: registering metrics: %w", err)
			}
			existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				return nil, fmt.Errorf("aclhook: registering metrics: %w", err)
			}
			vec = existing
		}
	}
	h := &Hook{
		subject:    opts.Subject,
		server:     opts.Server,
		logger:     logger,
		denyLog:    &denyLog{logger: logger, now: opts.Now},
		denied:     map[string]prometheus.Counter{},
		sweepEvery: time.Minute,
		stop:       make(chan struct{}),
	}
	for _, a := range []string{labelPublish, labelSubscribe, labelWill} {
		h.denied[a] = vec.WithLabelValues(a)
	}
	h.rules.Store(rules)
	return h, nil
}

// Rules are the rules in force.
func (h *Hook) Rules() *Rules { return h.rules.Load() }

// ID returns "idmq-acl".
func (h *Hook) ID() string { return ID }

// Provides declares the mochi events the hook handles.
func (h *Hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnDisconnect, mqtt.OnClientExpired, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnPacketRead:
		return true
	}
	return false
}

// Init starts the sweeper that forgets the rules of clients mochi dropped without OnDisconnect.
func (h *Hook) Init(any) error {
	if h.started.Swap(true) {
		return nil
	}
	h.sweeper.Add(1)
	go func() {
		defer h.sweeper.Done()
		t := time.NewTicker(h.sweepEvery)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				h.sweep()
			}
		}
	}()
	return nil
}

// Stop ends the sweeper.
func (h *Hook) Stop() error {
	h.stopOnce.Do(func() { close(h.stop) })
	h.sweeper.Wait()
	return nil
}

// OnConnect compiles the client's rules and refuses a Will topic the client may not publish to;
// mochi itself never checks Will topics.
func (h *Hook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	if cl.Net.Inline {
		return nil
	}
	acl := h.compile(cl)
	if d, ok := h.willForbidden(cl, acl); ok {
		h.logger.Log(context.Background(), refusal.Lookup(refusal.WillNotAuthorized).Level, "acl: connection refused: will topic not authorized",
			"client", cl.ID, "username", string(cl.Properties.Username),
			"topic", cl.Properties.Will.TopicName, "rule", d.Rule())
		// The hook sends the CONNACK itself: mochi's v5-to-v3 table lacks 0x87. The codes: refusal.Table.
		code, _ := refusal.Connack(refusal.WillNotAuthorized, cl.Properties.ProtocolVersion)
		if err := h.server.SendConnack(cl, code, false, nil); err != nil {
			return fmt.Errorf("aclhook: refusing will topic: %w", err)
		}
		return refusal.Err(refusal.WillNotAuthorized)
	}
	if acl != nil {
		h.clients.Store(cl, acl)
	}
	return nil
}

// willForbidden reports whether the client has a Will whose topic it may not publish to.
func (h *Hook) willForbidden(cl *mqtt.Client, acl *ClientRules) (Decision, bool) {
	if atomic.LoadUint32(&cl.Properties.Will.Flag) == 0 {
		return Decision{}, false
	}
	d := acl.Check(ActionPublish, cl.Properties.Will.TopicName)
	if d.Allowed {
		return d, false
	}
	h.deny(cl, labelWill, cl.Properties.Will.TopicName, d)
	return d, true
}

// Refresh recompiles the client's rules from its Subject, e.g. after MQTT 5 re-authentication.
// A Will topic the new rules forbid is dropped: the Will is not sent. Call it on the client's own
// goroutine (from OnAuthPacket): mochi changes the client's Will there without a lock.
func (h *Hook) Refresh(cl *mqtt.Client) {
	if cl.Net.Inline || cl.Closed() {
		return
	}
	acl := h.compile(cl)
	if acl == nil {
		h.clients.Delete(cl)
	} else {
		h.clients.Store(cl, acl)
	}
	if d, ok := h.willForbidden(cl, acl); ok {
		atomic.StoreUint32(&cl.Properties.Will.Flag, 0) // mochi reads the flag atomically before sending
		h.logger.Info("acl: will dropped: topic no longer authorized",
			"client", cl.ID, "topic", cl.Properties.Will.TopicName, "rule", d.Rule())
	}
}

func (h *Hook) compile(cl *mqtt.Client) *ClientRules {
	s, ok := h.subject(cl)
	if !ok {
		return nil
	}
	if s.ClientID == "" {
		s.ClientID = cl.ID
	}
	acl, errs := h.rules.Load().Compile(s)
	for _, err := range errs {
		h.logger.Warn("acl: ignored an invalid granted filter", "client", cl.ID, "error", err)
	}
	return acl
}

// OnDisconnect forgets the rules of a client whose session ends with the connection. A persistent
// session keeps them: mochi checks messages queued for it while offline against them. They are
// dropped when the session expires, is taken over, or by the sweeper.
func (h *Hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	h.denyLog.forget(cl)
	if expire || cl.IsTakenOver() {
		h.clients.Delete(cl)
	}
}

// OnClientExpired forgets an expired persistent session's rules.
func (h *Hook) OnClientExpired(cl *mqtt.Client) { h.clients.Delete(cl) }

// sweep forgets closed clients that are no longer the server's session for their id: those mochi
// dropped on an error path without calling OnDisconnect, and taken-over sessions.
func (h *Hook) sweep() (forgotten int) {
	h.clients.Range(func(k, _ any) bool {
		cl := k.(*mqtt.Client)
		if !cl.Closed() {
			return true
		}
		if cur, ok := h.server.Clients.Get(cl.ID); !ok || cur != cl {
			h.clients.Delete(cl)
			forgotten++
		}
		return true
	})
	return forgotten
}

// OnACLCheck answers mochi for inbound publishes (write), SUBSCRIBE filters and every outbound
// delivery, including retained messages (read). It runs on the publisher's goroutine.
func (h *Hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true // the server itself
	}
	act, label := ActionSubscribe, labelSubscribe
	if write {
		if topic == "" {
			// A v5 publish naming its topic by alias alone: mochi asks before resolving the alias,
			// so OnPublish checks the resolved topic.
			return true
		}
		if isV3(cl) {
			return true // OnPublish decides (denyaction.go)
		}
		act, label = ActionPublish, labelPublish
	}
	d := h.rulesOf(cl).Check(act, topic)
	if d.Allowed {
		return true
	}
	h.deny(cl, label, topic, d)
	return false
}

// OnPublish checks the publishes of 3.1.1 clients (denyaction.go), publishes whose topic came from a
// topic alias (see OnACLCheck), and, when a rule restricts qos or retain, every publish with its QoS and
// retain flag (OnACLCheck knows neither). A denied v5 QoS 1/2 publish gets PUBACK/PUBREC 0x87, as mochi
// does for its own ACL check.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if isV3(cl) {
		return h.publishV3(cl, pk)
	}
	if cl.Net.Inline || (!pk.Properties.TopicAliasFlag && !h.rules.Load().limited) {
		return pk, nil
	}
	d := h.rulesOf(cl).CheckPublish(pk.TopicName, pk.FixedHeader.Qos, pk.FixedHeader.Retain)
	if d.Allowed {
		return pk, nil
	}
	h.deny(cl, labelPublish, pk.TopicName, d)
	if pk.FixedHeader.Qos > 0 {
		ackType := packets.Puback
		if pk.FixedHeader.Qos == 2 {
			ackType = packets.Pubrec
		}
		ack := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: ackType},
			PacketID:    pk.PacketID,
			ReasonCode:  packets.ErrNotAuthorized.Code,
			Properties:  packets.Properties{ReasonString: packets.ErrNotAuthorized.Reason},
		}
		if err := cl.WritePacket(ack); err != nil {
			return pk, err
		}
	}
	return pk, packets.ErrRejectPacket // mochi drops the packet without further acks
}

// OnPacketRead makes a QoS 1/2 publish to $SYS reach the ACL. mochi drops such publishes before
// asking the ACL and sends no PUBACK/PUBREC at all, leaving the client waiting; prefixing another
// '$' keeps the topic a '$' topic, which the rules always deny (v5: 0x87; 3.1.1: deny_action).
func (h *Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 0 && !cl.Net.Inline &&
		len(pk.TopicName) >= len(mqtt.SysPrefix) && strings.EqualFold(pk.TopicName[:len(mqtt.SysPrefix)], mqtt.SysPrefix) {
		pk.TopicName = "$" + pk.TopicName
	}
	return pk, nil
}

func (h *Hook) rulesOf(cl *mqtt.Client) *ClientRules {
	if v, ok := h.clients.Load(cl); ok {
		if acl := v.(*ClientRules); acl.from == h.rules.Load() {
			return acl
		}
		return h.recompile(cl, v.(*ClientRules)) // compiled under rules a Reload has replaced since
	}
	if cl.Net.Conn == nil && !cl.Net.Inline {
		// A persistent session restored from storage after a restart: its owner has not connected since,
		// so OnConnect never compiled its rules. The Subject decides what such a session may still receive.
		if acl := h.compile(cl); acl != nil {
			v, _ := h.clients.LoadOrStore(cl, acl)
			return v.(*ClientRules)
		}
	}
	return nil
}

// deny counts a denied request and logs it at debug level, at most once per client per denyLogEvery.
// The log call is guarded so that denials allocate nothing while debug logging is off.
func (h *Hook) deny(cl *mqtt.Client, label, topic string, d Decision) {
	h.denied[label].Inc()
	if h.denyLog.enabled() {
		h.denyLog.log(cl, label, topic, d)
	}
}
