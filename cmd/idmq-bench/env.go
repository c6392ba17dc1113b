package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

// env is what every scenario shares for one run.
type env struct {
	cfg      *config
	dialer   *dialer
	subs     *dialer // fanin subscribers: --sub-addr; the same as dialer without it
	creds    *credentials
	runID    string
	idPrefix string
	base     time.Time // payload timestamps are offsets from here
	log      io.Writer // progress lines (stderr)
	phase    uint32    // bumped per message phase so a late message from an earlier phase is never counted
}

func newEnv(cfg *config, d *dialer, creds *credentials, log io.Writer) *env {
	var b [3]byte
	_, _ = rand.Read(b[:])
	e := &env{cfg: cfg, dialer: d, subs: d, creds: creds, runID: hex.EncodeToString(b[:]), base: time.Now(), log: log}
	e.idPrefix = cfg.ClientIDPrefix
	if e.idPrefix == "" {
		// Short enough that ids stay within the 23 bytes every MQTT 3.1.1 broker must accept [MQTT-3.1.3-5].
		e.idPrefix = "b" + e.runID + "-"
	}
	return e
}

// forSubscribers is e with the subscribers' dialer: fanin's subscribers connect to --sub-addr.
func (e *env) forSubscribers() *env {
	s := *e
	s.dialer = e.subs
	return &s
}

// options is the CONNECT of the client in slot i of a scenario; tag keeps client ids of scenarios apart.
func (e *env) options(tag string, i int, cred credential) connectOptions {
	return connectOptions{
		version:    e.cfg.Protocol,
		clientID:   fmt.Sprintf("%s%s%d", e.idPrefix, tag, i),
		cred:       cred,
		sendCred:   e.creds.present(),
		authMethod: e.cfg.AuthMethod,
		keepalive:  uint16(e.cfg.Keepalive / time.Second),
		receiveMax: uint16(e.cfg.ReceiveMaximum),
		timeout:    e.cfg.ConnectTimeout,
	}
}

func (e *env) newResult(scenario string) *result {
	return &result{
		Scenario:    scenario,
		Label:       e.cfg.Label,
		Transport:   e.cfg.Transport,
		Protocol:    e.cfg.protocolName(),
		Credentials: e.creds.kind,
	}
}

func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(e.log, "idmq-bench: "+format+"\n", args...)
}

func (e *env) nextTracker(perPub int) *tracker {
	e.phase++
	return newTracker(e.base, e.phase, perPub)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
