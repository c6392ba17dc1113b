package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// shardsPerWebhook bounds how many events of different clients one webhook has in flight at once.
const shardsPerWebhook = 8

// Options configure a Dispatcher.
type Options struct {
	Config Config // defaulted and validated by New
	Node   string // stamped on every event
	// Store persists undelivered events across restarts; nil keeps them in memory only (a shutdown then
	// counts them in idmq_webhook_dropped_total{reason="shutdown"}). The Dispatcher closes it.
	Store      *Store
	Registerer prometheus.Registerer // optional
	Logger     *slog.Logger          // optional
	HTTPClient *http.Client          // optional; the default follows no redirects
	Now        func() time.Time      // optional clock
}

// Dispatcher queues events for every webhook that wants them and delivers them in the background.
type Dispatcher struct {
	node     string
	webhooks []*webhook
	store    *Store
	log      *slog.Logger
	now      func() time.Time
	seq      atomic.Uint64
	cancel   context.CancelFunc

	closeMu sync.RWMutex // Emit holds it shared: Close waits for Emits in progress
	closed  bool
}

// New validates the config, loads what the store kept and starts delivering.
func New(opts Options) (*Dispatcher, error) {
	cfg := opts.Config
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{node: opts.Node, store: opts.Store, log: opts.Logger, now: opts.Now}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.now == nil {
		d.now = time.Now
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	if d.store != nil {
		d.store.onError = func(err error) {
			m.storeErrs.Inc()
			d.log.Error("events: persisting the webhook queue failed; events are still delivered from memory", "error", err)
		}
	}
	client := opts.HTTPClient
	if client == nil {
		client = newHTTPClient()
	}
	for _, wc := range cfg.Webhooks {
		wm := m.forWebhook(wc.Name)
		d.webhooks = append(d.webhooks, &webhook{cfg: wc, secret: []byte(wc.Secret),
			q:     newQueue(shardsPerWebhook, wc.MaxQueue, func(n int) { wm.depth.Set(float64(n)) }),
			store: d.store, client: client, m: wm, log: d.log, now: d.now})
	}
	if err := d.restore(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	for _, w := range d.webhooks {
		w.start(ctx)
	}
	return d, nil
}

// persisted is what restore reads back from a stored body.
type persisted struct {
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	ClientID string    `json:"client_id"`
}

// restore queues the events the store kept, in their original order, and continues the sequence after them.
func (d *Dispatcher) restore() error {
	if d.store == nil {
		return nil
	}
	var last uint64
	for _, w := range d.webhooks {
		items, err := d.store.load(w.cfg.Name)
		if err != nil {
			return fmt.Errorf("events: reading the persisted queue of %q: %w", w.cfg.Name, err)
		}
		for _, it := range items {
			var p persisted
			if err := json.Unmarshal(it.body, &p); err != nil || p.ID == "" {
				d.log.Warn("events: skipping an unreadable persisted event", "webhook", w.cfg.Name, "seq", it.seq)
				d.store.del(w.cfg.Name, it)
				continue
			}
			it.id, it.at = p.ID, p.Time
			if dropped := w.q.push(w.q.shardOf(p.ClientID), it); dropped != nil { // max_queue was lowered
				w.m.queueFull.Inc()
				d.store.del(w.cfg.Name, dropped)
			}
			last = max(last, it.seq)
		}
		if len(items) > 0 {
			d.log.Info("events: undelivered events restored", "webhook", w.cfg.Name, "events", w.q.len())
		}
	}
	d.seq.Store(last)
	d.warnOrphans()
	return nil
}

// warnOrphans names persisted queues of webhooks no longer configured: they are kept, not deleted, in case
// the webhook was renamed by mistake.
func (d *Dispatcher) warnOrphans() {
	names, err := d.store.buckets()
	if err != nil {
		return
	}
	for _, n := range names {
		name := strings.TrimPrefix(n, "webhook/")
		if !slices.ContainsFunc(d.webhooks, func(w *webhook) bool { return w.cfg.Name == name }) {
			d.log.Warn("events: the store holds events for a webhook no longer configured; they are not sent", "webhook", name)
		}
	}
}

// Emit queues e for every webhook whose filter takes its type. It fills ID, Time and Node when empty, and
// returns without waiting for the network or the disk.
func (d *Dispatcher) Emit(e Event) {
	if d == nil || !slices.ContainsFunc(d.webhooks, func(w *webhook) bool { return w.cfg.wants(e.Type) }) {
		return
	}
	if e.Time.IsZero() {
		e.Time = d.now()
	}
	e.Time = e.Time.UTC()
	if e.ID == "" {
		e.ID = NewID(e.Time)
	}
	if e.Node == "" {
		e.Node = d.node
	}
	body, err := json.Marshal(e)
	if err != nil { // an Event always marshals; keep the event loss visible if that ever changes
		d.log.Error("events: encoding an event failed", "type", e.Type, "error", err)
		return
	}
	d.closeMu.RLock()
	defer d.closeMu.RUnlock()
	seq := d.seq.Add(1)
	for _, w := range d.webhooks {
		if !w.cfg.wants(e.Type) {
			continue
		}
		if d.closed {
			w.m.shutdown.Inc()
			continue
		}
		w.enqueue(w.q.shardOf(e.ClientID), &item{seq: seq, id: e.ID, at: e.Time, body: body})
	}
}

// Close stops delivering. With a store, what is still queued stays in it for the next start; without one
// it is lost, counted and logged.
func (d *Dispatcher) Close() error {
	d.closeMu.Lock()
	if d.closed {
		d.closeMu.Unlock()
		return nil
	}
	d.closed = true
	d.closeMu.Unlock()
	d.cancel()
	for _, w := range d.webhooks {
		w.wg.Wait()
	}
	if d.store == nil {
		for _, w := range d.webhooks {
			if lost := len(w.q.drain()); lost > 0 {
				w.m.shutdown.Add(float64(lost))
				d.log.Warn("events: undelivered events lost at shutdown (the webhook queue is in memory only)", "webhook", w.cfg.Name, "events", lost)
			}
		}
		return nil
	}
	return d.store.Close()
}
