package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/idmq/idmq/broker"
)

// reloadOnSignal is SIGHUP: the config file again, or, without one, the TLS certificates only.
func reloadOnSignal(b *broker.Broker, log *slog.Logger) {
	if _, err := b.Reload(); errors.Is(err, broker.ErrNoConfigFile) {
		if err := b.ReloadCertificates(); err != nil {
			log.Error("certificate reload failed; still serving the previous certificates", "error", err)
		} else {
			log.Info("certificates reloaded")
		}
	} // Reload logged its outcome
}

// reload asks the broker running with the same config file to reload it: POST /v1/reload on the config's
// http.address (on loopback when it listens on every interface), with its first http.admin_keys entry. It
// needs neither a pid file nor signal rights; without admin keys, send SIGHUP to the process instead.
func reload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("c", "", "config file")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the broker")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, source, err := loadConfig(*configPath, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "idmq: %v (the running broker was not asked to reload)\n", err)
		return 1
	}
	if len(cfg.HTTP.AdminKeys) == 0 || cfg.HTTP.Address == "" {
		fmt.Fprintf(stderr, "idmq reload: %s has no http.admin_keys (or no http.address): send SIGHUP to the idmq process instead\n", source)
		return 1
	}
	url, err := reloadURL(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "idmq reload: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	req.Header.Set("Authorization", "Bearer "+cfg.HTTP.AdminKeys[0])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "idmq reload: no broker answered at %s: %v\n", url, err)
		return 1
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "idmq reload: %s: %v\n", resp.Status, body["message"])
		return 1
	}
	fmt.Fprintf(stdout, "reloaded %s: %v clients disconnected\n", source, body["disconnected"])
	if rr, _ := body["restart_required"].([]any); len(rr) > 0 {
		fmt.Fprintf(stdout, "restart required for: %v\n", rr)
	}
	return 0
}

func reloadURL(cfg *broker.Config) (string, error) {
	host, port, err := net.SplitHostPort(cfg.HTTP.Address)
	if err != nil {
		return "", fmt.Errorf("http.address %q: %v", cfg.HTTP.Address, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if cfg.HTTP.CertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(strings.Trim(host, "[]"), port) + "/v1/reload", nil
}
