// Command idmq is the idmq MQTT broker: serve, check a config, mint tokens, print the version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/broker"
)

const usage = `idmq: an MQTT broker that speaks your identity provider.

Usage:
  idmq serve   [-c FILE]   run the broker (FILE, else ./idmq.yaml, else embedded defaults)
  idmq check   [-c FILE]   validate the config and reach every identity provider
  idmq token   [-c FILE] --sub NAME [--ttl 1h] [--claim k=v ...]   mint a token from the local provider
  idmq token device --key PRIVATE.pem --project ID [--alg ES256] [--ttl 1h]   mint a device token (devices provider)
  idmq explain [-c FILE] --token TOKEN|- [--client-id ID] [--username NAME] [--topic 'users/alice/#:subscribe' ...] [--json]
                           why a token is accepted or refused, and what it may do (offline; - reads the token from stdin)
  idmq reload  [-c FILE]   make the broker running with FILE re-read it (POST /v1/reload with an admin key)
  idmq version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "check":
		return check(args[1:], stdout, stderr)
	case "token":
		return token(args[1:], stdout, stderr)
	case "reload":
		return reload(args[1:], stdout, stderr)
	case "explain":
		return explain(args[1:], os.Stdin, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "idmq %s\n", broker.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "idmq: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// loadConfig picks -c FILE, else ./idmq.yaml, else the embedded defaults.
func loadConfig(path string, stderr io.Writer) (*broker.Config, string, error) {
	if path == "" {
		if _, err := os.Stat("idmq.yaml"); err == nil {
			path = "idmq.yaml"
		}
	}
	if path == "" {
		cfg, err := broker.LoadDefault()
		return cfg, "embedded defaults", err
	}
	cfg, err := broker.LoadFile(path)
	return cfg, path, err
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("c", "", "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, source, err := loadConfig(*configPath, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "idmq: %v\n", err)
		return 1
	}
	log := broker.NewLogger(cfg.Log, stderr)
	log.Info("starting idmq", "version", broker.Version, "config", source)

	b, err := broker.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	if err := b.Start(); err != nil {
		log.Error("cannot start", "error", err)
		_ = b.Close(context.Background())
		return 1
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	for sig := range signals {
		if sig == syscall.SIGHUP {
			reloadOnSignal(b, log)
			continue
		}
		log.Info("shutting down", "signal", sig.String())
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		log.Error("shutdown", "error", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

func check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("c", "", "config file")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each identity provider")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, source, err := loadConfig(*configPath, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "idmq: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "config %s: ok\n", source)
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	hook, err := authhook.New(authhook.Options{Config: cfg.Auth, DataDir: cfg.Resolve(cfg.DataDir), BaseDir: cfg.Resolve("."), Logger: quietLogger()})
	if err != nil {
		fmt.Fprintf(stderr, "idmq: %v\n", err)
		return 1
	}
	defer hook.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	failed := false
	for _, p := range hook.Check(ctx) {
		if p.Ready {
			fmt.Fprintf(stdout, "provider %s (%s): ok, %d keys\n", p.Name, p.Type, p.Keys)
		} else {
			failed = true
			fmt.Fprintf(stdout, "provider %s (%s): FAILED: %s\n", p.Name, p.Type, p.LastError)
		}
	}
	if failed {
		return 1
	}
	return 0
}

// claimFlags collects repeated --claim key=value.
type claimFlags map[string]string

func (c claimFlags) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (c claimFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	c[k] = val
	return nil
}

func token(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "device" {
		return tokenDevice(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("c", "", "config file")
	sub := fs.String("sub", "", "subject: becomes the MQTT username")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	claims := claimFlags{}
	fs.Var(claims, "claim", "attribute key=value (repeatable), usable as %{key} and in ACL conditions")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *sub == "" {
		fmt.Fprintln(stderr, "idmq token: --sub is required")
		return 2
	}
	_, hook, ok := offlineAuth(*configPath, stderr)
	if !ok {
		return 1
	}
	defer hook.Stop()
	li := hook.LocalIssuer()
	if li == nil {
		fmt.Fprintln(stderr, "idmq token: the config has no provider of type local")
		return 1
	}
	tok, err := li.Mint(*sub, *ttl, claims, authhook.TopicGrants{})
	if err != nil {
		fmt.Fprintf(stderr, "idmq token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// tokenDevice signs a device token with a device's own private key, as a Cloud IoT or ClearBlade device
// would; it needs no config. It prints only the token.
func tokenDevice(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token device", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyPath := fs.String("key", "", "the device's private key (PEM)")
	project := fs.String("project", "", "the devices provider's project: the token's aud")
	alg := fs.String("alg", "", "RS256, ES256 or EdDSA (default: the key's own)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime (at most 24h)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *keyPath == "" || *project == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "idmq token device: --key and --project are required, and nothing else")
		return 2
	}
	key, err := authhook.ReadPrivateKey(*keyPath)
	if err != nil {
		fmt.Fprintf(stderr, "idmq token device: %v\n", err)
		return 1
	}
	tok, err := authhook.MintDeviceToken(key, *project, *alg, *ttl, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "idmq token device: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// offlineAuth loads the config and builds its auth hook without a server, as `token` and `explain` need; on
// failure it has told the user why. The caller stops the hook.
func offlineAuth(configPath string, stderr io.Writer) (*broker.Config, *authhook.Hook, bool) {
	cfg, _, err := loadConfig(configPath, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "idmq: %v\n", err)
		return nil, nil, false
	}
	hook, err := authhook.New(authhook.Options{Config: cfg.Auth, DataDir: cfg.Resolve(cfg.DataDir), BaseDir: cfg.Resolve("."), Logger: quietLogger()})
	if err != nil {
		fmt.Fprintf(stderr, "idmq: %v\n", err)
		return nil, nil, false
	}
	return cfg, hook, true
}
