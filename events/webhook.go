package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff between attempts at one event: doubling from backoffMin, capped at backoffMax, each wait drawn
// from [d/2, d) so that workers retrying after one outage do not hit the receiver in lockstep.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
)

// webhook delivers one receiver's queue: a worker per shard.
type webhook struct {
	cfg     WebhookConfig
	secret  []byte
	q       *queue
	store   *Store // nil: memory only
	client  *http.Client
	m       webhookMetrics
	log     *slog.Logger
	now     func() time.Time
	failing atomic.Bool // logs once per outage, not once per attempt
	wg      sync.WaitGroup
}

// enqueue never blocks on the network or the disk.
func (w *webhook) enqueue(s int, it *item) {
	// Stored before it is queued: a delivery fast enough to forget it first would leave it stored, and a
	// restart would send it again.
	if w.store != nil {
		w.store.put(w.cfg.Name, it)
	}
	if old := w.q.push(s, it); old != nil {
		w.m.queueFull.Inc()
		w.forget(old)
	}
}

// forget removes a popped event from the store.
func (w *webhook) forget(it *item) {
	if w.store != nil {
		w.store.del(w.cfg.Name, it)
	}
}

func (w *webhook) start(ctx context.Context) {
	for s := range w.q.shards {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.run(ctx, s)
		}()
	}
}

// run delivers shard s's events one at a time, each until it is delivered, expired or dropped for room.
// On shutdown the event in hand stays queued (and persisted), to be sent again after a restart.
func (w *webhook) run(ctx context.Context, s int) {
	for {
		it := w.q.head(s)
		if it == nil {
			select {
			case <-ctx.Done():
				return
			case <-w.q.wake[s]:
				continue
			}
		}
		for attempt := 0; ; attempt++ {
			err := w.attempt(ctx, it)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				if w.q.pop(s, it) {
					w.forget(it)
				}
				w.m.delivered.Inc() // after forget: a delivered count covers the store's delete
				w.recovered()
				break
			}
			w.m.failed.Inc()
			w.failed(err)
			if w.now().Sub(it.at) >= w.cfg.RetryFor {
				if w.q.pop(s, it) { // else it was dropped for room meanwhile, and counted then
					w.forget(it)
					w.m.expired.Inc()
				}
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff(attempt)):
			}
			if w.q.head(s) != it { // dropped for room while waiting
				break
			}
		}
	}
}

func backoff(attempt int) time.Duration {
	d := backoffMax
	if attempt < 16 {
		d = min(backoffMin<<attempt, backoffMax)
	}
	return d/2 + rand.N(d/2)
}

// attempt POSTs the event once, signed now.
func (w *webhook) attempt(ctx context.Context, it *item) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(it.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "idmq-webhooks")
	req.Header.Set(SignatureHeader, Sign(w.secret, w.now(), it.body))
	req.Header.Set(EventIDHeader, it.id)
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry a query the operator would rather not see in logs
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
	return nil
}

func (w *webhook) failed(err error) {
	if !w.failing.Swap(true) {
		w.log.Warn("events: webhook delivery failing; retrying with backoff", "webhook", w.cfg.Name, "error", err.Error(),
			"queued", w.q.len())
	}
}

func (w *webhook) recovered() {
	if w.failing.Swap(false) {
		w.log.Info("events: webhook delivering again", "webhook", w.cfg.Name, "queued", w.q.len())
	}
}

// newHTTPClient follows no redirect: a 3xx is a failed attempt, so events never go where the config does
// not say.
func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
