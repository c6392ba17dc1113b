package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// Test timings: short enough that a test stays well under 20 s on a loaded 2-core machine, long enough that
// JetStream elections (about 2 s) fit.
var testOpts = Options{
	OpTimeout:    3 * time.Second,
	StartTimeout: 20 * time.Second,
	Heartbeat:    200 * time.Millisecond,
}

func testOptions(t testing.TB) Options {
	o := testOpts
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return o
}

// freePort returns a loopback port nobody listens on now; ports handed out are not handed out again in this
// test binary.
func freePort(t testing.TB) int { return testkit.FreePort(t) }

// clusterConfigs returns the configs of n embedded nodes routed to one another on loopback.
func clusterConfigs(t testing.TB, n int) []Config {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	cfgs := make([]Config, n)
	for i := range cfgs {
		var routes []string
		for j, p := range ports {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
			}
		}
		cfgs[i] = Config{
			Node: fmt.Sprintf("node-%c", 'a'+i),
			NATS: NATSConfig{Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes},
		}
		cfgs[i].SetDefaults(t.TempDir())
		if err := cfgs[i].Validate(); err != nil {
			t.Fatal(err)
		}
	}
	return cfgs
}

// startNodes starts one node per config concurrently (a JetStream cluster elects its meta leader only once a
// quorum is up) and closes them at the end of the test.
func startNodes(t testing.TB, cfgs []Config) []*Cluster {
	t.Helper()
	return startNodesWith(t, cfgs, nil)
}

// startNodesWith is startNodes with a chance to adjust each node's options.
func startNodesWith(t testing.TB, cfgs []Config, adjust func(i int, o *Options)) []*Cluster {
	t.Helper()
	nodes := make([]*Cluster, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i := range cfgs {
		o := testOptions(t)
		if adjust != nil {
			adjust(i, &o)
		}
		wg.Go(func() {
			nodes[i], errs[i] = Start(context.Background(), cfgs[i], o)
		})
	}
	wg.Wait()
	for _, n := range nodes {
		if n != nil {
			t.Cleanup(func() { n.Close() })
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("starting %s: %v", cfgs[i].Node, err)
		}
	}
	return nodes
}

func startCluster(t testing.TB, n int) ([]*Cluster, []Config) {
	t.Helper()
	cfgs := clusterConfigs(t, n)
	return startNodes(t, cfgs), cfgs
}

// recorder collects deliveries.
type recorder struct {
	mu   sync.Mutex
	got  []Delivery
	more chan struct{}
}

func newRecorder() *recorder { return &recorder{more: make(chan struct{}, 1)} }

func (r *recorder) add(d Delivery) {
	r.mu.Lock()
	r.got = append(r.got, d)
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.got...)
}

// waitFor waits until at least n deliveries arrived, then a little longer so that extra ones would show.
func (r *recorder) waitFor(t testing.TB, n int, within time.Duration) []Delivery {
	t.Helper()
	deadline := time.After(within)
	for {
		if got := r.snapshot(); len(got) >= n {
			time.Sleep(300 * time.Millisecond)
			return r.snapshot()
		}
		select {
		case <-r.more:
		case <-deadline:
			got := r.snapshot()
			t.Fatalf("got %d deliveries within %s, want %d", len(got), within, n)
			return nil
		}
	}
}

func consume(t testing.TB, c *Cluster, opts ConsumeOptions) *recorder {
	t.Helper()
	r := newRecorder()
	k, err := c.Consume(context.Background(), opts, r.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return r
}

// eventually polls cond every 50ms until it holds or within passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}
