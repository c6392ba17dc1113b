package main

import (
	"context"
	"fmt"
	"time"
)

// runConnect opens --clients connections as fast as --concurrency allows, each with its own credential.
// With --connect-warmup, a first unmeasured round uses credentials --clients..2×--clients-1: a fresh broker
// process pays for growing its heap and touching new memory during its first storm (on this machine's kernel
// the first 2,000 connects cost an allow-all broker twice what the next 2,000 do), which says more about
// start-up than about connecting; other credentials keep the measured tokens out of any verified-token cache.
func runConnect(ctx context.Context, e *env) *result {
	r := e.newResult(scenarioConnect)
	n := e.cfg.Clients
	if e.cfg.ConnectWarmup {
		if e.creds.present() && e.creds.count() < 2*n {
			r.Error = fmt.Sprintf("--connect-warmup needs %d credentials (2×--clients) so that the measured round's are not cached; the file has %d", 2*n, e.creds.count())
			return r
		}
		e.progress("connect: warm-up of %d clients with other credentials", n)
		warm := newFleet(n)
		warm.open(ctx, e, 0, n, func(i int) connectOptions { return e.options("w", i, e.creds.get(n+i)) }, nil, nil)
		r.Warmup = warm.report()
		warm.close(true)
		sleep(ctx, 200*time.Millisecond)
	}
	e.progress("connect: %d clients, concurrency %d", n, e.cfg.Concurrency)
	cpuBefore, cpuErr := e.cfg.brokerCPU()
	f := newFleet(n)
	f.open(ctx, e, 0, n, func(i int) connectOptions { return e.options("c", i, e.creds.get(i)) }, nil, nil)
	r.Connect = f.report()
	r.Dropped, r.DropReasons = countDropped(f)
	f.close(true)
	if cpuAfter, err := e.cfg.brokerCPU(); err == nil && cpuErr == nil {
		r.BrokerCPUS = seconds(cpuAfter - cpuBefore)
	}
	return r
}

// runReconnect connects the clients once (warm-up, e.g. filling a verified-token cache), disconnects them, and
// measures --reconnect-rounds rounds of connecting them again with the same client ids and credentials.
func runReconnect(ctx context.Context, e *env) *result {
	r := e.newResult(scenarioReconnect)
	n := e.cfg.Clients
	options := func(i int) connectOptions { return e.options("r", i, e.creds.get(i)) }
	e.progress("reconnect: warm-up of %d clients", n)
	warm := newFleet(n)
	warm.open(ctx, e, 0, n, options, nil, nil)
	r.Warmup = warm.report()
	warm.close(true)
	// Let the broker finish tearing the sessions down so the measured rounds are reconnects, not takeovers.
	sleep(ctx, 200*time.Millisecond)

	// Broker CPU is measured around the measured rounds only: the warm-up paid for the signature checks the
	// cache exists to skip, and counting it would charge them to the reconnects. The pauses between rounds
	// stay in: the broker tears the last round's sessions down during them, and disconnects are part of the cost.
	cpuBefore, cpuErr := e.cfg.brokerCPU()
	f := newFleet(n)
	var reasons failures
	for round := 1; round <= e.cfg.ReconnectRounds && ctx.Err() == nil; round++ {
		e.progress("reconnect: %d clients again (round %d of %d)", n, round, e.cfg.ReconnectRounds)
		f.open(ctx, e, 0, n, options, nil, nil)
		r.Dropped += f.dropped(&reasons)
		if round < e.cfg.ReconnectRounds {
			f.closeRound(true)
			sleep(ctx, 200*time.Millisecond)
		}
	}
	r.Connect = f.report()
	r.DropReasons, _ = reasons.snapshot()
	f.close(true)
	if cpuAfter, err := e.cfg.brokerCPU(); err == nil && cpuErr == nil {
		r.BrokerCPUS = seconds(cpuAfter - cpuBefore)
	}
	return r
}

func countDropped(f *fleet) (int, map[string]int) {
	var reasons failures
	n := f.dropped(&reasons)
	m, _ := reasons.snapshot()
	return n, m
}
