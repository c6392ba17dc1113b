package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/idmq/idmq/aclhook"
	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/broker"
)

// topicFlags collects repeated --topic TOPIC[:ACTION].
type topicFlags []broker.TopicRequest

func (t *topicFlags) String() string { return fmt.Sprint(len(*t)) }

func (t *topicFlags) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty topic")
	}
	*t = append(*t, broker.ParseTopicRequest(v))
	return nil
}

// explain answers, offline, why a token is accepted or refused and what it may do: the config's providers
// (their keys fetched as `idmq check` does), the revocations in data_dir, and the config's rules. It exits
// 0 when the token would be accepted, 1 when refused. The token is never printed.
func explain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("c", "", "config file")
	tok := fs.String("token", "", "the token as a client sends it; - reads it from stdin (keeps it out of shell history)")
	clientID := fs.String("client-id", "", "the CONNECT client id (names the device for device tokens)")
	username := fs.String("username", "", "the CONNECT username")
	asJSON := fs.Bool("json", false, "print JSON, as POST /v1/explain answers")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each identity provider's keys")
	var topics topicFlags
	fs.Var(&topics, "topic", "TOPIC[:publish|subscribe] to decide (repeatable; no action: both)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *tok == "-" {
		line, err := bufio.NewReader(io.LimitReader(stdin, authhook.MaxTokenSize+2)).ReadString('\n')
		if err != nil && err != io.EOF {
			fmt.Fprintf(stderr, "idmq explain: reading the token: %v\n", err)
			return 1
		}
		*tok = strings.TrimSpace(line)
	}
	if *tok == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "idmq explain: --token is required (or --token - to read it from stdin), and nothing else")
		return 2
	}
	cfg, hook, ok := offlineAuth(*configPath, stderr)
	if !ok {
		return 1
	}
	defer hook.Stop()
	rules, err := aclhook.NewRules(cfg.ACL)
	if err != nil {
		fmt.Fprintf(stderr, "idmq: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	hook.Check(ctx) // fetch every key set now; a provider that fails shows in the explanation as keys_unavailable
	ex, err := broker.Explain(hook, rules, broker.ExplainRequest{Token: *tok, ClientID: *clientID, Username: *username, Topics: topics})
	if err != nil {
		fmt.Fprintf(stderr, "idmq explain: %v\n", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ex)
	} else {
		ex.WriteText(stdout)
	}
	if ex.Error != nil {
		return 1
	}
	return 0
}
