package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// runFanin pairs publisher k with subscriber k (same credential, so a users/%u/# ACL admits both) on topic k;
// every publisher sends --messages messages at once.
func runFanin(ctx context.Context, e *env, qos byte) *result {
	cfg := e.cfg
	p, m := cfg.Publishers, cfg.Messages
	r := e.newResult(scenarioFanin)
	r.QoS = qosPtr(qos)
	tr := e.nextTracker(m)
	topics := make([]string, p)
	inboxes := make([]*inbox, p)
	for k := range p {
		topics[k] = expandTopic(cfg.FaninTopic, e.creds.get(k).username, k, e.runID)
		inboxes[k] = tr.newInbox(k)
	}
	e.progress("fanin qos %d: %d publishers → %d subscribers, %d messages each", qos, p, p, m)
	if cfg.SubAddr != "" {
		e.progress("fanin: publishers on %s, subscribers on %s", cfg.Addr, cfg.SubAddr)
	}
	f := newFleet(2 * p)
	defer f.close(true)
	f.open(ctx, e.forSubscribers(), 0, p,
		func(i int) connectOptions { return e.options(fmt.Sprintf("fs%d-", qos), i, e.creds.get(i)) },
		func(i int, c *client) { in := inboxes[i]; c.onMessage = func(b []byte) { tr.deliver(in, b) } },
		func(ctx context.Context, i int, c *client) error {
			return c.subscribe(ctx, topics[i], qos, cfg.ConnectTimeout)
		})
	counters := &pubCounters{}
	pubs := make([]*publisher, p)
	f.open(ctx, e, p, 2*p,
		func(i int) connectOptions { return e.options(fmt.Sprintf("fp%d-", qos), i-p, e.creds.get(i-p)) },
		func(i int, c *client) { pubs[i-p] = newPublisher(c, cfg.Inflight, counters) },
		nil)

	var wg sync.WaitGroup
	pairs := 0
	start := time.Now()
	for k := range p {
		sub, pub := f.get(k), f.get(p+k)
		if sub == nil || pub == nil {
			continue // a failed connection is reported under connect, not as lost messages
		}
		pairs++
		wg.Add(1)
		go func() {
			defer wg.Done()
			pubs[k].run(ctx, pub, tr, topics[k], qos, k, m, cfg.Rate, cfg.PayloadSize)
		}()
	}
	wg.Wait()
	publishing := time.Since(start)
	expected := int64(pairs * m)
	tr.await(ctx, expected, cfg.Drain)

	r.Connect = f.report()
	r.Messages = messageReport(tr, counters, qos, pairs, pairs, expected, start, publishing)
	r.Dropped, r.DropReasons = countDropped(f)
	return r
}

// runFanout has one publisher send --fanout-messages to one topic with --subscribers subscribers. When the
// topic template names the user (%u), every client uses credential 0 so that the per-user ACL admits them.
func runFanout(ctx context.Context, e *env, qos byte) *result {
	cfg := e.cfg
	s, m := cfg.Subscribers, cfg.FanoutMessages
	r := e.newResult(scenarioFanout)
	r.QoS = qosPtr(qos)
	tr := e.nextTracker(m)
	shared := strings.Contains(cfg.FanoutTopic, "%u")
	cred := func(i int) credential {
		if shared {
			return e.creds.get(0)
		}
		return e.creds.get(i)
	}
	topic := expandTopic(cfg.FanoutTopic, e.creds.get(0).username, 0, e.runID)
	e.progress("fanout qos %d: 1 publisher → %d subscribers, %d messages", qos, s, m)
	f := newFleet(s + 1)
	defer f.close(true)
	f.open(ctx, e, 0, s,
		func(i int) connectOptions { return e.options(fmt.Sprintf("os%d-", qos), i, cred(i)) },
		func(i int, c *client) { in := tr.newInbox(0); c.onMessage = func(b []byte) { tr.deliver(in, b) } },
		func(ctx context.Context, i int, c *client) error {
			return c.subscribe(ctx, topic, qos, cfg.ConnectTimeout)
		})
	counters := &pubCounters{}
	var pub *publisher
	f.open(ctx, e, s, s+1,
		func(int) connectOptions { return e.options(fmt.Sprintf("op%d-", qos), 0, e.creds.get(0)) },
		func(_ int, c *client) { pub = newPublisher(c, cfg.Inflight, counters) },
		nil)

	subscribers := int(f.connected.Load())
	start := time.Now()
	var publishing time.Duration
	var expected int64
	if c := f.get(s); c != nil {
		subscribers-- // the publisher
		pub.run(ctx, c, tr, topic, qos, 0, m, cfg.Rate, cfg.PayloadSize)
		publishing = time.Since(start)
		expected = int64(subscribers * m)
		tr.await(ctx, expected, cfg.Drain)
	}

	r.Connect = f.report()
	r.Messages = messageReport(tr, counters, qos, 1, subscribers, expected, start, publishing)
	r.Dropped, r.DropReasons = countDropped(f)
	return r
}

func qosPtr(q byte) *int {
	v := int(q)
	return &v
}
