package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the cluster's JetStream data; doc.go describes what each holds.
const (
	StreamName       = "idmq-msgs"
	RetainedBucket   = "idmq-retained"
	SessionsBucket   = "idmq-sessions"
	OwnersBucket     = "idmq-owners"
	RevocationBucket = "idmq-revocations"
	NodesBucket      = "idmq-nodes"
	WillsBucket      = "idmq-wills"
	QoS2Bucket       = "idmq-qos2"

	// PresenceTTL is how long a node's presence key outlives its last heartbeat: a node that dies without
	// Close drops out of Nodes() within it. Fixed, not configured: every node provisions the same bucket.
	PresenceTTL = 5 * time.Second
	// dedupWindow lets a publisher retry a publish with the same message id without a duplicate.
	dedupWindow = 2 * time.Minute
)

// ErrReplicas: the configured replicas cannot be placed on the cluster's JetStream servers.
var ErrReplicas = errors.New("cluster: not enough JetStream servers for the configured replicas")

type buckets struct {
	stream      jetstream.Stream
	retained    jetstream.KeyValue
	sessions    jetstream.KeyValue
	owners      jetstream.KeyValue
	revocations jetstream.KeyValue
	nodes       jetstream.KeyValue
	wills       jetstream.KeyValue
	qos2        jetstream.KeyValue
}

func (c *Cluster) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "idmq: MQTT messages routed between nodes and kept for offline persistent sessions",
		Subjects:    []string{SubjectPrefix + ">", LongSubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.cfg.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    c.cfg.Replicas,
		Duplicates:  min(dedupWindow, c.cfg.Retention),
		AllowDirect: true,
	}
}

func (c *Cluster) bucketConfigs() []jetstream.KeyValueConfig {
	kv := func(name, desc string) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: name, Description: desc, History: 1,
			Storage: jetstream.FileStorage, Replicas: c.cfg.Replicas}
	}
	nodes := kv(NodesBucket, "idmq: live nodes (key: node name), renewed by each node's heartbeat")
	nodes.TTL, nodes.Storage = PresenceTTL, jetstream.MemoryStorage // churns every second, worthless after a restart
	return []jetstream.KeyValueConfig{
		kv(RetainedBucket, "idmq: retained messages (key: RetainedKey(topic))"),
		kv(SessionsBucket, "idmq: persistent sessions (key: ClientKey(client id))"),
		kv(OwnersBucket, "idmq: which node holds each client's connection (key: ClientKey(client id))"),
		kv(RevocationBucket, "idmq: credential revocations"),
		nodes,
		kv(WillsBucket, "idmq: Wills of connected clients, published by another node if theirs dies (key: ClientKey(client id))"),
		kv(QoS2Bucket, "idmq: persistent sessions' QoS 2 deliveries in flight (key: ClientKey(client id))"),
	}
}

// provision creates or updates the stream and buckets. Every node runs it at start with the same configuration,
// so it is idempotent and safe to run concurrently; a node with a different retention or replicas updates them
// for all (the last node started wins, as with any shared setting). All are provisioned in parallel: on a
// cluster's first start, nodes racing to create the same stream wait out lost replies (see retry) once, not once
// per bucket in a row.
func (c *Cluster) provision(ctx context.Context) (buckets, error) {
	var b buckets
	cfgs := c.bucketConfigs()
	kvs := make([]jetstream.KeyValue, len(cfgs))
	errs := make([]error, len(cfgs)+1)
	var wg sync.WaitGroup
	wg.Go(func() {
		s, err := retry(ctx, c.opts.OpTimeout, func(ctx context.Context) (jetstream.Stream, error) {
			return c.js.CreateOrUpdateStream(ctx, c.streamConfig())
		})
		if err != nil {
			errs[0] = c.provisionErr("stream "+StreamName, err)
		}
		b.stream = s
	})
	for i, cfg := range cfgs {
		wg.Go(func() {
			kv, err := retry(ctx, c.opts.OpTimeout, func(ctx context.Context) (jetstream.KeyValue, error) {
				return c.js.CreateOrUpdateKeyValue(ctx, cfg)
			})
			if err != nil {
				errs[i+1] = c.provisionErr("bucket "+cfg.Bucket, err)
			}
			kvs[i] = kv
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return b, err // the first; the others are alike
		}
	}
	b.retained, b.sessions, b.owners, b.revocations, b.nodes, b.wills = kvs[0], kvs[1], kvs[2], kvs[3], kvs[4], kvs[5]
	b.qos2 = kvs[6]
	return b, nil
}

// retry repeats op while JetStream reports a transient state: right after an election the meta leader may
// answer "temporarily unavailable", and when several nodes create the same stream at once the meta leader
// answers only the last of the equal requests (nats-server 2.15 keeps one reply per inflight assignment), so
// the others time out. While a cluster forms, the meta leader may know fewer peers than the replicas need for a
// moment. Tries are therefore short at first (1s, 2s, ... up to timeout) and all bounded by ctx (StartTimeout),
// after which a placement error becomes ErrReplicas.
func retry[T any](ctx context.Context, timeout time.Duration, op func(context.Context) (T, error)) (T, error) {
	for attempt := 0; ; {
		attempt++
		callCtx, cancel := context.WithTimeout(ctx, min(timeout, time.Duration(attempt)*time.Second))
		v, err := op(callCtx)
		cancel()
		if err == nil || !transient(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamNameInUse, 10008: // 10008: JetStream system temporarily unavailable
			return true
		case 10005, 10023: // no suitable peers, insufficient resources: peers may still be joining at start
			return true
		}
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoHeartbeat)
}

// provisionErr turns JetStream's placement errors into one that names the setting to change.
func (c *Cluster) provisionErr(what string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10074, 10023, 10005: // replicas > 1 in non-clustered mode, insufficient resources, no suitable peers
			return fmt.Errorf("%w: cluster.replicas is %d, but %s (%s); lower replicas or add nodes",
				ErrReplicas, c.cfg.Replicas, c.clusterSizeText(), apiErr.Description)
		}
	}
	return fmt.Errorf("cluster: provisioning %s: %w", what, err)
}

func (c *Cluster) clusterSizeText() string {
	if c.srv == nil {
		if c.nc.ConnectedClusterName() == "" {
			return "the NATS server at nats.url is not clustered"
		}
		return "the NATS cluster at nats.url cannot place that many copies"
	}
	jsz, err := c.srv.Jsz(&server.JSzOptions{})
	if err != nil || jsz.Meta == nil {
		return "this NATS server is not clustered"
	}
	return fmt.Sprintf("the JetStream cluster has %d server(s)", jsz.Meta.Size)
}
