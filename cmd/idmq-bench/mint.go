package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/broker"
)

// maxMint bounds one mint run: more tokens than any scenario can use is a typo.
const maxMint = 1_000_000

// runMint is `idmq-bench mint`: N tokens from the config's local provider, minted in-process (the same
// LocalIssuer `idmq token` uses, without a process per token), written as "user<TAB>token" lines.
func runMint(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("idmq-bench mint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("c", "", "idmq config `file` with a provider of type local (required)")
	n := fs.Int("n", 0, "number of tokens (required)")
	template := fs.String("username-template", "bench-%d", "username (token sub) of token %d, 0-based")
	ttl := fs.Duration("ttl", 2*time.Hour, "token lifetime")
	out := fs.String("o", "", "output `file` (mode 0600); default stdout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *configPath == "" || fs.NArg() > 0 || *n <= 0 || *n > maxMint {
		fmt.Fprintf(stderr, "idmq-bench mint: usage: idmq-bench mint -c FILE -n 1..%d [--username-template bench-%%d] [--ttl 2h] [-o FILE]\n", maxMint)
		return 2
	}
	cfg, err := broker.LoadFile(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench mint: %v\n", err)
		return 1
	}
	hook, err := authhook.New(authhook.Options{Config: cfg.Auth, DataDir: cfg.Resolve(cfg.DataDir), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench mint: %v\n", err)
		return 1
	}
	defer hook.Stop()
	li := hook.LocalIssuer()
	if li == nil {
		fmt.Fprintln(stderr, "idmq-bench mint: the config has no provider of type local")
		return 1
	}
	lines, err := mintTokens(li, *n, *template, *ttl)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench mint: %v\n", err)
		return 1
	}
	w := stdout
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "idmq-bench mint: %v\n", err)
			return 1
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriter(w)
	for _, l := range lines {
		bw.WriteString(l)
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		fmt.Fprintf(stderr, "idmq-bench mint: %v\n", err)
		return 1
	}
	return 0
}

// mintTokens signs n tokens on every core (an RS256 signature costs about a millisecond).
func mintTokens(li *authhook.LocalIssuer, n int, template string, ttl time.Duration) ([]string, error) {
	lines := make([]string, n)
	errs := make([]error, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += len(errs) {
				user := expandIndex(template, i)
				tok, err := li.Mint(user, ttl, nil, authhook.TopicGrants{})
				if err != nil {
					errs[w] = err
					return
				}
				lines[i] = user + "\t" + tok
			}
		}()
	}
	wg.Wait()
	return lines, errors.Join(errs...)
}
