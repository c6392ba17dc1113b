// Command idmq-bench is a load generator for MQTT brokers on this machine: connect and reconnect storms,
// fan-in and fan-out publishing, and many idle connections, over TCP, TLS or WebSocket, MQTT 3.1.1 or 5.
// It prints one JSON line per scenario on stdout and a short table on stderr, and refuses non-loopback targets.
//
// Helpers for bench/compare.sh: `idmq-bench serve -c FILE [--allow-all]` runs idmq's broker (allow-all
// replaces auth and ACL: a baseline that must stay out of the idmq binary), `idmq-bench mint` mints local-provider
// tokens in bulk, `idmq-bench keygen` writes a signing key per JWT algorithm and `idmq-bench report` turns a
// run's results into its section of BENCHMARKS.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			os.Exit(runServe(ctx, args[1:], os.Stderr))
		case "mint":
			os.Exit(runMint(args[1:], os.Stdout, os.Stderr))
		case "keygen":
			os.Exit(runKeygen(args[1:], os.Stderr))
		case "report":
			os.Exit(runReport(args[1:], os.Stderr))
		}
	}
	os.Exit(run(ctx, args, os.Stdout, os.Stderr))
}

// fdHeadroom is descriptors beyond the connections: stdio, /proc and /metrics reads, the runtime's own.
const fdHeadroom = 64

// run is the whole program; it returns the exit code: 0 when every scenario ran (whatever it measured),
// 1 when a scenario could not run or the run hit --total-timeout, 2 for bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench: %v\n", err)
		return 2
	}
	limit, err := raiseFileLimit()
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench: %v\n", err)
		return 1
	}
	if need := uint64(cfg.maxConnections() + fdHeadroom); limit < need {
		fmt.Fprintf(stderr, "idmq-bench: RLIMIT_NOFILE is %d even after raising it to the hard limit, but %d connections need about %d descriptors: raise the hard limit (ulimit -Hn, systemd LimitNOFILE) or lower the client counts\n",
			limit, cfg.maxConnections(), need)
		return 1
	}
	creds, err := loadCredentials(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench: %v\n", err)
		return 2
	}
	d, err := newDialer(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench: %v\n", err)
		return 2
	}
	e := newEnv(cfg, d, creds, stderr)
	if cfg.SubAddr != "" {
		sc := *cfg
		sc.Addr = cfg.SubAddr
		if e.subs, err = newDialer(&sc); err != nil {
			fmt.Fprintf(stderr, "idmq-bench: %v\n", err)
			return 2
		}
	}
	if n := creds.count(); n > 0 && n < cfg.maxConnections() {
		e.progress("%d credentials for up to %d connections: credentials are reused round-robin", n, cfg.maxConnections())
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.TotalTimeout)
	defer cancel()
	enc := json.NewEncoder(stdout)
	var results []*result
	code := 0
	for _, s := range cfg.Scenarios {
		for _, r := range runScenario(ctx, e, s) {
			if err := enc.Encode(r); err != nil {
				fmt.Fprintf(stderr, "idmq-bench: %v\n", err)
				return 1
			}
			results = append(results, r)
			if r.Error != "" || r.TimedOut && ctx.Err() != nil {
				code = 1
			}
		}
	}
	printTable(stderr, results)
	return code
}

// runScenario runs one scenario (each QoS of fanin/fanout separately), each under its own --timeout.
func runScenario(ctx context.Context, e *env, name string) []*result {
	one := func(f func(context.Context) *result) *result {
		if ctx.Err() != nil {
			r := e.newResult(name)
			r.TimedOut, r.Error = true, "not started: --total-timeout reached"
			return r
		}
		sctx, cancel := context.WithTimeout(ctx, e.cfg.ScenarioTimeout)
		defer cancel()
		start := time.Now()
		cpuBefore, cpuErr := e.cfg.brokerCPU()
		r := f(sctx)
		r.DurationS = seconds(time.Since(start))
		if cpuAfter, err := e.cfg.brokerCPU(); err == nil && cpuErr == nil && r.BrokerCPUS == 0 {
			r.BrokerCPUS = seconds(cpuAfter - cpuBefore) // unless the scenario measured its own part
		}
		r.TimedOut = sctx.Err() != nil
		return r
	}
	switch name {
	case scenarioConnect:
		return []*result{one(func(c context.Context) *result { return runConnect(c, e) })}
	case scenarioReconnect:
		return []*result{one(func(c context.Context) *result { return runReconnect(c, e) })}
	case scenarioIdle:
		return []*result{one(func(c context.Context) *result { return runIdle(c, e) })}
	}
	var out []*result
	for _, q := range e.cfg.QoS {
		if name == scenarioFanin {
			out = append(out, one(func(c context.Context) *result { return runFanin(c, e, q) }))
		} else {
			out = append(out, one(func(c context.Context) *result { return runFanout(c, e, q) }))
		}
	}
	return out
}

// raiseFileLimit lifts the soft descriptor limit to the hard one and returns the limit now in force.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("setrlimit NOFILE to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}
