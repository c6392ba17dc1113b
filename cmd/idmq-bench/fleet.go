package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// fleet is a set of connections opened together: who connected, how fast, and why the others did not.
type fleet struct {
	slots     []atomic.Pointer[client] // nil: not (yet) connected
	connack   histogram
	failures  failures
	attempted atomic.Int64
	connected atomic.Int64
	elapsed   time.Duration // from the first dial to the last setup done
	stopPing  context.CancelFunc
}

// setupFunc prepares client i after its reader started (handlers are set before, in prepare).
type setupFunc func(ctx context.Context, i int, c *client) error

// newFleet makes room for n clients and starts the keep-alive pinger that covers them until close.
func newFleet(n int) *fleet {
	f := &fleet{slots: make([]atomic.Pointer[client], n)}
	ctx, stop := context.WithCancel(context.Background())
	f.stopPing = stop
	go f.pinger(ctx)
	return f
}

// open connects slots lo..hi-1, at most --concurrency at a time, until all are tried or ctx ends. prepare (may be
// nil) sets handlers before the reader starts; setup (may be nil) runs after, e.g. to subscribe, and counts
// toward the elapsed time. A client whose setup fails is closed and counted as a failure.
func (f *fleet) open(ctx context.Context, e *env, lo, hi int, options func(i int) connectOptions, prepare func(i int, c *client), setup setupFunc) {
	var next atomic.Int64
	next.Store(int64(lo))
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(e.cfg.Concurrency, hi-lo); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= hi {
					return
				}
				f.attempted.Add(1)
				c, lat, err := dialClient(ctx, e.dialer, options(i))
				if err != nil {
					f.failures.add(err)
					continue
				}
				f.connack.record(lat)
				if prepare != nil {
					prepare(i, c)
				}
				c.start()
				if setup != nil {
					if err := setup(ctx, i, c); err != nil {
						f.failures.add(err)
						c.close()
						continue
					}
				}
				f.slots[i].Store(c)
				f.connected.Add(1)
			}
		}()
	}
	wg.Wait()
	f.elapsed += time.Since(start)
}

// pinger sends PINGREQ to clients that have been silent for half their keep alive: one goroutine for all.
func (f *fleet) pinger(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for i := range f.slots {
				c := f.slots[i].Load()
				if c == nil || c.keepalive == 0 {
					continue
				}
				if now.UnixNano()-c.lastWrite.Load() >= int64(c.keepalive/2) {
					_ = c.ping()
				}
			}
		}
	}
}

func (f *fleet) get(i int) *client { return f.slots[i].Load() }

// dropped counts connections the broker ended while we held them, by reason.
func (f *fleet) dropped(into *failures) int {
	n := 0
	for i := range f.slots {
		if c := f.slots[i].Load(); c != nil {
			if gone, err := c.dropped(); gone {
				into.add(err)
				n++
			}
		}
	}
	return n
}

// close disconnects every client (DISCONNECT when graceful) and waits, bounded, until their readers stopped so
// that handler state may be read without races.
func (f *fleet) close(graceful bool) {
	f.stopPing()
	f.closeClients(graceful)
}

// closeRound closes the clients but keeps the fleet and its counters, so that the next open adds a round to
// the same report.
func (f *fleet) closeRound(graceful bool) {
	f.closeClients(graceful)
	for i := range f.slots {
		f.slots[i].Store(nil)
	}
}

func (f *fleet) closeClients(graceful bool) {
	for i := range f.slots {
		if c := f.slots[i].Load(); c != nil {
			if graceful {
				c.disconnect()
			} else {
				c.close()
			}
		}
	}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for i := range f.slots {
		if c := f.slots[i].Load(); c != nil {
			select {
			case <-c.done:
			case <-deadline.C:
				return
			}
		}
	}
}

// report fills the connect part of a result.
func (f *fleet) report() *connectStats {
	m, nf := f.failures.snapshot()
	s := &connectStats{
		Attempted: int(f.attempted.Load()),
		Connected: int(f.connected.Load()),
		Failed:    nf,
		Failures:  m,
		DurationS: seconds(f.elapsed),
		ConnackMs: f.connack.summary(),
	}
	if f.elapsed > 0 {
		s.PerSecond = round1(float64(s.Connected) / f.elapsed.Seconds())
	}
	return s
}
