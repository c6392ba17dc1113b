package mochifix

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// Options says which fixes Add installs and around what.
type Options struct {
	// Hooks are your own hooks, e.g. authentication then ACL; Add adds them first, in this order, with a
	// nil config. Replay (Fixes.Start) asks them what mochi asks the server's hooks when it delivers: the
	// ACL verdict (OR-ed), shared subscriber selection, packet id exhaustion. Hooks added to the server
	// outside Add are not asked.
	Hooks []mqtt.Hook
	// Store is a mochi storage hook (bolt.Hook, redis.Hook, ...) and StoreConfig its Init config. Add wraps
	// it with the persistence fixes. Nil: everything stays in memory.
	Store       mqtt.Hook
	StoreConfig any
	// WALPath is the write-ahead log's file (wal_hook.go); "" runs without one. It needs a Store and, in
	// Hooks, the hook that answers OnACLCheck. The file is locked while open: a second process fails Add.
	WALPath string
	// SlowSubscriberWait is how long a QoS 1/2 publisher may wait for a subscriber that is behind
	// (backpressure.go); 0 turns that fix off and mochi drops what exceeds a subscriber's window.
	SlowSubscriberWait time.Duration
	// SkipAuthMethodEcho leaves the Authentication Method out of a successful CONNACK, against MQTT 5
	// [MQTT-4.12.0-5] (authmethod.go), for clients that cannot take it: paho.golang up to v0.23 at least
	// panics on such a CONNACK unless its ClientConfig.AuthHandler is set.
	SkipAuthMethodEcho bool
	// Logger defaults to discarding; Registerer, if set, receives the backpressure metrics.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// StoreError is an error of the store's own Init (corrupt, locked by another process, unreachable).
type StoreError struct{ Err error }

func (e *StoreError) Error() string { return e.Err.Error() }
func (e *StoreError) Unwrap() error { return e.Err }

// Fixes is what Add installed on one server.
type Fixes struct {
	server    *mqtt.Server
	opts      Options
	log       *slog.Logger
	store     *store // nil: memory only
	slow      *backpressure
	pending   []*walEntry // replayed by Start
	accept    chan struct{}
	closeOnce sync.Once
	acceptOne sync.Once
	closeErr  error
}

// Add adds opts.Hooks and then every fix hook to server, in the one order that works: your hooks (so a
// refused CONNECT or publish is refused before any fix acts on it), the send quota off (quota.go) and
// the Receive Maximum enforced instead (receivemax.go), the backpressure wait (backpressure.go), and last
// the store with its fixes and the write-ahead log, which must see only publishes no other hook can still
// reject or change. Add no hook that provides OnPublish after Add.
//
// Call it before server.Serve; add listeners through Fixes.Listener; after server.Serve, call Start. If
// Add fails, nothing it opened is left open (the hooks it did add stay on the server; close or drop it).
func Add(server *mqtt.Server, opts Options) (*Fixes, error) {
	if opts.WALPath != "" && opts.Store == nil {
		return nil, errors.New("mochifix: a write-ahead log needs a store: with memory only there is nothing to replay into")
	}
	if opts.WALPath != "" && !hookSet(opts.Hooks).provides(mqtt.OnACLCheck) {
		// Replay asks only these hooks; without an ACL among them it would deliver nothing, silently.
		return nil, errors.New("mochifix: a write-ahead log needs the hook that answers OnACLCheck in Options.Hooks: replay asks it")
	}
	f := &Fixes{server: server, opts: opts, log: opts.Logger, accept: make(chan struct{})}
	if f.log == nil {
		f.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, h := range opts.Hooks {
		if err := server.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("mochifix: adding hook %s: %w", h.ID(), err)
		}
	}
	if err := server.AddHook(new(sendQuotaOff), nil); err != nil {
		return nil, err
	}
	if err := server.AddHook(new(publishKeepsUserProperties), nil); err != nil {
		return nil, err
	}
	if !opts.SkipAuthMethodEcho {
		if err := server.AddHook(new(authMethodEcho), nil); err != nil {
			return nil, err
		}
	}
	if err := server.AddHook(new(packetIDSpaces), nil); err != nil {
		return nil, err
	}
	receiveMax := &receiveMaximum{maxInflight: int(server.Options.Capabilities.MaximumInflight)}
	if err := server.AddHook(receiveMax, nil); err != nil {
		return nil, err
	}
	if opts.SlowSubscriberWait > 0 {
		// The window is bounded by the outbound queue too: mochi drops a QoS 1/2 delivery that finds the queue
		// full and deletes its in-flight record, after the publisher had its PUBACK (TestQoS1BurstFitsTheOutboundQueue).
		window := int(server.Options.Capabilities.MaximumInflight)
		if q := int(server.Options.Capabilities.MaximumClientWritesPending); q > 0 && q < window {
			window = q
		}
		f.slow = newBackpressure(server, window, opts.SlowSubscriberWait, f.log, opts.Registerer)
		if err := server.AddHook(f.slow, nil); err != nil {
			return nil, err
		}
	}
	if opts.Store == nil {
		return f, nil
	}
	f.store = &store{Hook: opts.Store}
	if opts.WALPath != "" {
		w, pending, err := openWALLog(opts.WALPath, 0, f.log)
		if err != nil {
			return nil, err
		}
		f.store.wal, f.pending = w, pending
	}
	if err := server.AddHook(f.store, opts.StoreConfig); err != nil {
		if f.store.wal != nil {
			_ = f.store.wal.close()
		}
		return nil, &StoreError{Err: err}
	}
	return f, nil
}

// HoldInline makes the QoS 1/2 publishes of cl, an inline client, wait for subscribers that are behind as a
// connected publisher's do (backpressure.go). For an inline client that hands on messages already acknowledged
// elsewhere, e.g. a cluster node delivering other nodes' messages: without the wait, a burst of them (a backlog
// after a node's loss) finds subscribers' windows full and mochi drops the overflow. Not for a caller that must
// not block. A no-op when SlowSubscriberWait is 0.
func (f *Fixes) HoldInline(cl *mqtt.Client) {
	if f.slow != nil && cl != nil && cl.Net.Inline {
		f.slow.heldInline.Store(cl, struct{}{})
	}
}

// Listener wraps l as the package-level Listener does, and holds its Serve until Start is done.
func (f *Fixes) Listener(l listeners.Listener, o ListenerOptions) listeners.Listener {
	return &listener{Listener: l, server: f.server, opts: o, gate: f.accept}
}

// Start replays the write-ahead log into the sessions mochi restored from the store, then lets the
// listeners from Fixes.Listener accept. Call it once, after server.Serve. An error means the log could not
// be written: serving without it would acknowledge messages a crash can lose, so close the server.
func (f *Fixes) Start() error {
	if f.store != nil && f.store.wal != nil {
		if err := f.replay(); err != nil {
			return err
		}
	}
	f.acceptOne.Do(func() { close(f.accept) })
	return nil
}

func (f *Fixes) replay() error {
	w := f.store.wal
	hooks := hookSet(f.opts.Hooks)
	if f.slow != nil {
		hooks = append(hooks, f.slow)
	}
	r := &walReplay{
		server:  f.server,
		hooks:   hooks,
		persist: func(cl *mqtt.Client, pk packets.Packet) { f.opts.Store.OnQosPublish(cl, pk, pk.Created, 0) },
		now:     time.Now,
		log:     f.log,
	}
	st, err := r.run(w, f.pending)
	f.pending = nil
	if err != nil {
		return fmt.Errorf("replaying the write-ahead log %s: %w", w.path, err)
	}
	if st.Records > 0 {
		f.log.Info("write-ahead log replayed", "records", st.Records, "delivered", st.Delivered,
			"already_held", st.Held, "skipped", st.Skipped)
	}
	return nil
}

// Close releases what Add opened — the store, the log file and its lock — and lets any listener waiting
// for Start return. server.Close stops the same hooks; calling both is fine, in either order.
func (f *Fixes) Close() error {
	f.acceptOne.Do(func() { close(f.accept) })
	f.closeOnce.Do(func() {
		if f.slow != nil {
			_ = f.slow.Stop()
		}
		if f.store != nil {
			f.closeErr = f.store.Stop()
		}
	})
	return f.closeErr
}
