package broker

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Every MQTT connection holds one file descriptor, so RLIMIT_NOFILE is the broker's real connection limit:
// past it, accept fails and clients see refused or reset connections with nothing in the log to say why.
const (
	fdCheckInterval = 10 * time.Second
	fdWarnFraction  = 0.8 // warn when open descriptors pass this share of the limit…
	fdClearFraction = 0.7 // …and again only after they fell below this one
)

// fdWatch logs the descriptor limit at start and warns when open descriptors come near it. Counting
// /proc/self/fd every 10 s costs one directory read; no per-connection work.
type fdWatch struct {
	log   *slog.Logger
	limit func() (soft, hard uint64, err error)
	count func() (int, error)
	near  bool // above fdWarnFraction and not yet back below fdClearFraction
}

func newFDWatch(log *slog.Logger) *fdWatch {
	return &fdWatch{log: log, limit: nofileLimit, count: countOpenFDs}
}

// start logs the limit and checks every interval until the returned stop is called; stop waits for the
// checker to end.
func (w *fdWatch) start(interval time.Duration) (stop func()) {
	soft, hard, err := w.limit()
	if err != nil {
		w.log.Warn("cannot read the file descriptor limit; connections near it will not be warned about", "error", err)
		return func() {}
	}
	w.log.Info("file descriptor limit", "soft", soft, "hard", hard,
		"note", "each MQTT connection uses one descriptor; raise LimitNOFILE / ulimit -n for more connections")
	w.check()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				w.check()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

// check compares the open descriptors with the soft limit and logs when they cross the thresholds.
func (w *fdWatch) check() {
	soft, _, err := w.limit()
	if err != nil || soft == 0 {
		return
	}
	open, err := w.count()
	if err != nil {
		return
	}
	used := float64(open) / float64(soft)
	switch {
	case !w.near && used >= fdWarnFraction:
		w.near = true
		w.log.Warn(fmt.Sprintf("open file descriptors at %.0f%% of the limit: new connections will be refused when it is reached", used*100),
			"open", open, "limit", soft,
			"fix", "raise the process limit (systemd LimitNOFILE=, docker --ulimit nofile=, ulimit -n) or cap mqtt.max_clients below it")
	case w.near && used < fdClearFraction:
		w.near = false
		w.log.Info("open file descriptors back below 70% of the limit", "open", open, "limit", soft)
	}
}

// nofileLimit is RLIMIT_NOFILE. Go raises the soft limit to the hard one at start, so soft is what applies.
func nofileLimit() (soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	return lim.Cur, lim.Max, nil
}

// countOpenFDs counts the entries of /proc/self/fd (Linux), minus the descriptor used to read it.
func countOpenFDs() (int, error) {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	return len(names) - 1, nil
}
