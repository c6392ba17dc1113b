package mochifix

// Defects in mochi v2.7.9's listener handling, and what Listener does about each:
//   - Server.Close ends each listener's clients through closeListenerClients, whose
//     Clients.GetByListener read-locks the client map twice: a client ending at the same moment (waiting
//     for the write lock) deadlocks shutdown. Listener's Close stops the clients from a copied list
//     (StopClients) instead; CloseServer does the same for a whole server.
//   - attachClient calls ClientsWg.Add(1) on the connection's goroutine, unordered with Server.Close's
//     ClientsWg.Wait (a data race; Close may also return while a client is still being attached). Listener
//     counts its connections itself, refuses new ones once closing, and its Close returns only when every
//     connection it handed to mochi has ended.
//   - mochi sets no read deadline before CONNECT, so a silent socket is held forever: ConnectTimeout sets
//     one (mochi replaces it with the keepalive deadline once CONNECT is read).
//   - Serve restores the store and starts every listener at once, but the write-ahead log must be replayed
//     into the restored sessions before a client can take one over: Fixes.Listener holds Serve until
//     Fixes.Start is done (the bound socket keeps early connections in its backlog).
// Upstream: none filed.
// Proof: TestListenerCloseStopsClientsItself, TestListenerConnectTimeout, TestFixesListenerWaitsForStart
// (listener_test.go); end to end TestSilentConnectionsAreClosedAndDoNotBlockOthers
// and TestKill9LosesNoAcknowledgedMessage (e2e).
// Delete each part when mochi fixes it: GetByListener locks once, ClientsWg.Add runs before the connection's
// goroutine, a CONNECT deadline is set; the gate when the log goes
// (wal_hook.go).

import (
	"log/slog"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ListenerOptions configures Listener.
type ListenerOptions struct {
	// ConnectTimeout closes a connection that sends no CONNECT within it; 0 sets no deadline.
	ConnectTimeout time.Duration
	// Coalesce wraps each accepted connection in a CoalescingConn (coalesce.go).
	Coalesce bool
}

// Listener wraps a mochi listener (listeners.Net, Websocket, or one of your own) for server s. Add it
// with s.AddListener. When Add was called on s, use Fixes.Listener instead.
func Listener(l listeners.Listener, s *mqtt.Server, o ListenerOptions) listeners.Listener {
	return &listener{Listener: l, server: s, opts: o}
}

// StopClients returns the callback that ends a listener's clients at shutdown without mochi's deadlock:
// Clients.GetAll copies the client map under a single read lock.
func StopClients(s *mqtt.Server) listeners.CloseFn {
	return func(id string) {
		for _, cl := range s.Clients.GetAll() {
			if cl.Net.Listener == id && !cl.Closed() {
				cl.Stop(packets.ErrServerShuttingDown)
			}
		}
	}
}

// CloseServer closes s without mochi's shutdown deadlock, whatever its listeners: it stops every client,
// closes the server (listeners, then hooks), then stops any client that connected meanwhile. With listeners
// from Listener, s.Close alone is enough.
func CloseServer(s *mqtt.Server) error {
	stop := func() {
		for _, cl := range s.Clients.GetAll() {
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
	stop()
	err := s.Close()
	stop()
	return err
}

type listener struct {
	listeners.Listener
	server *mqtt.Server
	opts   ListenerOptions
	gate   <-chan struct{} // nil: serve at once
	log    *slog.Logger

	mu      sync.Mutex
	closing bool
	active  sync.WaitGroup // connections handed to mochi and not yet ended
}

func (l *listener) Init(log *slog.Logger) error {
	l.log = log
	return l.Listener.Init(log)
}

// Close ignores mochi's callback (closeListenerClients), stops the listener's clients itself and waits
// until each has ended, stopping any that attached meanwhile.
func (l *listener) Close(listeners.CloseFn) {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	stop := StopClients(l.server)
	l.Listener.Close(stop)
	ended := make(chan struct{})
	go func() {
		l.active.Wait()
		close(ended)
	}()
	for {
		select {
		case <-ended:
			return
		case <-time.After(50 * time.Millisecond):
			stop(l.ID())
		}
	}
}

func (l *listener) Serve(establish listeners.EstablishFn) {
	if l.gate != nil {
		<-l.gate
	}
	l.Listener.Serve(func(id string, c net.Conn) error {
		l.mu.Lock()
		if l.closing {
			l.mu.Unlock()
			return c.Close()
		}
		l.active.Add(1)
		l.mu.Unlock()
		defer l.active.Done()
		if l.opts.ConnectTimeout > 0 {
			_ = c.SetDeadline(time.Now().Add(l.opts.ConnectTimeout))
		}
		if l.opts.Coalesce {
			c = NewCoalescingConn(c)
		}
		c = newWindowConn(c) // holds what exceeds the client's Receive Maximum (receivemax.go)
		// Refusals are logged, with their reason, by the hook that refused; mochi's listener would add a
		// second, message-less warning for each.
		if err := establish(id, c); err != nil && l.log != nil {
			l.log.Debug("connection ended", "listener", id, "remote", c.RemoteAddr().String(), "error", err)
		}
		return nil
	})
}
