package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// idleQoS is the subscription and fan-out QoS of the idle scenario: the fan-out must lose nothing.
const idleQoS = 1

// runIdle holds --idle-clients authenticated connections with one subscription each, measures what they cost the
// broker, then publishes once per distinct subscribed topic (from the first client subscribed to it, which
// the ACL lets publish there) and times the delivery to every client.
func runIdle(ctx context.Context, e *env) *result {
	cfg := e.cfg
	n := cfg.IdleClients
	r := e.newResult(scenarioIdle)
	r.QoS = qosPtr(idleQoS)
	tr := e.nextTracker(1)

	topics := make([]string, n)
	topicKey := map[string]int{}
	keys := make([]int, n) // distinct-topic index of client i: the publisher index it expects
	for i := range n {
		topics[i] = expandTopic(cfg.IdleTopic, e.creds.get(i).username, i, e.runID)
		k, ok := topicKey[topics[i]]
		if !ok {
			k = len(topicKey)
			topicKey[topics[i]] = k
		}
		keys[i] = k
	}

	before, errs := sampleBroker(ctx, cfg.BrokerPID, cfg.MetricsURL)
	e.progress("idle: connecting %d clients (%d distinct topics), concurrency %d, %d source addresses", n, len(topicKey), cfg.Concurrency, len(e.dialer.sources))
	counters := &pubCounters{}
	f := newFleet(n)
	defer f.close(true)
	f.open(ctx, e, 0, n,
		func(i int) connectOptions { return e.options("i", i, e.creds.get(i)) },
		func(i int, c *client) {
			in := tr.newInbox(keys[i])
			c.onMessage = func(b []byte) { tr.deliver(in, b) }
			newPublisher(c, 1, counters) // only the PUBACK accounting; the fan-out publishes one message each
		},
		func(ctx context.Context, i int, c *client) error {
			return c.subscribe(ctx, topics[i], idleQoS, cfg.ConnectTimeout)
		})
	r.Connect = f.report()
	connected := int(f.connected.Load())
	e.progress("idle: %d connected in %.1fs; settling %s", connected, f.elapsed.Seconds(), cfg.IdleSettle)
	sleep(ctx, cfg.IdleSettle)
	after, errs2 := sampleBroker(ctx, cfg.BrokerPID, cfg.MetricsURL)
	r.Broker = brokerDelta(cfg.BrokerPID, connected, before, after, append(errs, errs2...))
	if rss, err := readRSS("/proc/self/status"); err == nil {
		r.SelfRSS = rss
	}

	// The first connected client of each topic publishes; every connected client expects exactly one message.
	first := make([]int, len(topicKey))
	for k := range first {
		first[k] = -1
	}
	for i := range n {
		if f.get(i) != nil && first[keys[i]] < 0 {
			first[keys[i]] = i
		}
	}
	var publishers []int
	for _, i := range first {
		if i >= 0 {
			publishers = append(publishers, i)
		}
	}
	e.progress("idle: fan-out, %d publishes", len(publishers))
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(cfg.Concurrency, len(publishers)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, cfg.PayloadSize)
			for ctx.Err() == nil {
				j := int(next.Add(1) - 1)
				if j >= len(publishers) {
					return
				}
				i := publishers[j]
				tr.stamp(buf, 0, keys[i])
				if err := f.get(i).publish(topics[i], idleQoS, buf); err != nil {
					counters.refused.add(err)
					continue
				}
				counters.sent.Add(1)
			}
		}()
	}
	wg.Wait()
	publishing := time.Since(start)
	tr.await(ctx, int64(connected), cfg.Drain)
	r.Messages = messageReport(tr, counters, idleQoS, len(publishers), connected, int64(connected), start, publishing)
	r.Dropped, r.DropReasons = countDropped(f)
	return r
}
