package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	rpprof "runtime/pprof"
	"time"

	"github.com/idmq/idmq/broker"
	"github.com/idmq/idmq/internal/benchmode"
)

// runServe is `idmq-bench serve`: idmq's broker as the product assembles it, optionally with auth and ACL
// replaced by allow-all. The unsafe mode lives here, in the benchmark tool, and never in the idmq binary.
// It serves until ctx ends (SIGINT/SIGTERM) and returns the exit code.
func runServe(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("idmq-bench serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("c", "", "idmq config `file` (required)")
	allowAll := fs.Bool("allow-all", false, "replace authentication and the ACL with allow-all (benchmark baseline only)")
	verifyBaseline := fs.Bool("allow-all-verify", false, "like --allow-all, plus one bare jwt.Parse of each CONNECT password with the local signing key (the connect-storm baseline)")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the whole run to `file` at exit")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback `host:port` (heap profiles while clients are connected)")
	memRate := fs.Int("mem-profile-rate", 0, "runtime.MemProfileRate in bytes (0 keeps Go's 512 KiB; 4096 sees per-connection allocations)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *configPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "idmq-bench serve: usage: idmq-bench serve -c FILE [--allow-all] [--cpu-profile FILE] [--pprof 127.0.0.1:PORT]")
		return 2
	}
	if *pprofAddr != "" {
		if err := requireLoopbackHostPort(*pprofAddr); err != nil {
			fmt.Fprintf(stderr, "idmq-bench serve: --pprof: %v\n", err)
			return 2
		}
	}
	if *memRate > 0 {
		runtime.MemProfileRate = *memRate // before anything the profile should see is allocated
	}
	if _, err := raiseFileLimit(); err != nil {
		fmt.Fprintf(stderr, "idmq-bench serve: %v\n", err)
		return 1
	}
	cfg, err := broker.LoadFile(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench serve: %v\n", err)
		return 1
	}
	log := broker.NewLogger(cfg.Log, stderr)
	var opts []benchmode.Option
	switch {
	case *allowAll && *verifyBaseline:
		fmt.Fprintln(stderr, "idmq-bench serve: --allow-all and --allow-all-verify exclude each other")
		return 2
	case *allowAll:
		opts = append(opts, benchmode.AllowAll())
	case *verifyBaseline:
		hook, err := newVerifyBaselineHook(cfg.Auth.SigningKeyFile)
		if err != nil {
			fmt.Fprintf(stderr, "idmq-bench serve: --allow-all-verify: %v\n", err)
			return 1
		}
		opts = append(opts, benchmode.BaselineAuth(hook))
	}
	b, err := broker.New(cfg, log, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench serve: %v\n", err)
		return 1
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "idmq-bench serve: --cpu-profile: %v\n", err)
			return 1
		}
		defer stop()
	}
	if *pprofAddr != "" {
		closePprof, err := servePprof(*pprofAddr)
		if err != nil {
			fmt.Fprintf(stderr, "idmq-bench serve: --pprof: %v\n", err)
			return 1
		}
		defer closePprof()
	}
	if err := b.Start(); err != nil {
		fmt.Fprintf(stderr, "idmq-bench serve: %v\n", err)
		_ = b.Close(context.Background())
		return 1
	}
	// Printed whatever the log level: scripts and tests wait for it.
	fmt.Fprintf(stderr, "idmq-bench serve: ready (allow-all %v)\n", *allowAll || *verifyBaseline)
	<-ctx.Done()
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(closeCtx); err != nil {
		fmt.Fprintf(stderr, "idmq-bench serve: close: %v\n", err)
		return 1
	}
	return 0
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := rpprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		rpprof.StopCPUProfile()
		f.Close()
	}, nil
}

// servePprof exposes the profiling endpoints on their own loopback listener, never on the broker's API.
func servePprof(addr string) (closeFn func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}
