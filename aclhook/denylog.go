package aclhook

import (
	"context"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// denyLogEvery is how often one client may cause a denial line. A client chooses how often it is
// denied, so without a limit it chooses how much the broker logs; the lines it would have caused in
// between are counted and reported on its next line.
const denyLogEvery = 10 * time.Second

// denyLog writes the debug line of a denial: who, which action, which topic, which rule. Never the
// payload. It is consulted only while debug logging is on.
type denyLog struct {
	logger  *slog.Logger
	now     func() time.Time
	clients sync.Map // *mqtt.Client -> *denyLogState
}

type denyLogState struct {
	mu         sync.Mutex
	next       time.Time // no line before this
	suppressed int       // denials not logged since the last line
}

func (l *denyLog) enabled() bool { return l.logger.Enabled(context.Background(), slog.LevelDebug) }

// log writes the line unless the client had one within denyLogEvery.
func (l *denyLog) log(cl *mqtt.Client, label, topic string, d Decision) {
	v, ok := l.clients.Load(cl)
	if !ok {
		v, _ = l.clients.LoadOrStore(cl, new(denyLogState))
	}
	st := v.(*denyLogState)
	now := l.now()
	st.mu.Lock()
	if now.Before(st.next) {
		st.suppressed++
		st.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.suppressed, st.next = 0, now.Add(denyLogEvery)
	st.mu.Unlock()
	args := []any{"client", cl.ID, "username", string(cl.Properties.Username), "action", label, "topic", topic, "rule", d.Rule()}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.logger.Debug("acl: denied", args...)
}

// forget drops a client's state when the hook forgets the client.
func (l *denyLog) forget(cl *mqtt.Client) { l.clients.Delete(cl) }
