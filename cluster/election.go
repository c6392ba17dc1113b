package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ElectionWait bounds how long a ready node waits for a bucket to elect a leader before it fails a client's
// request (a CONNECT's claim, a Will's record). Each bucket and the stream is its own replicated group whose
// leader may be any node: when that node dies, its groups have no leader until a follower's election timer
// fires (nats-server: 4 to 9s after the leader's last heartbeat) and it wins a vote. Meanwhile the node's
// readiness, which tests only idmq-nodes, may well hold, and every write to such a bucket finds no responder
// at once. Waiting turns the refusals of those seconds (CONNACK 0x88 from a node that says it is ready) into
// a slower CONNECT. 12s leaves room for the vote on a loaded machine and stays under the 15-30s a client
// usually waits for its CONNACK.
const ElectionWait = 12 * time.Second

// electionPoll is the pause between two tries while a bucket has no leader.
const electionPoll = 250 * time.Millisecond

// throughElection runs op, each try bounded by OpTimeout, again while the bucket it uses is between two
// leaders, until ctx ends or the node stops being ready (cut off from the majority: no election it can see
// will help). Between two leaders means: no server took the request (the leader died, none elected yet), or
// the try timed out (the request went to the dead node before its routes closed). op must be safe to repeat:
// a read, a put of the same value, or a compare-and-set whose loss the caller handles.
func throughElection[T any](c *Cluster, ctx context.Context, op func(context.Context) (T, error)) (T, error) {
	for {
		try, cancel := context.WithTimeout(ctx, c.opts.OpTimeout)
		v, err := op(try)
		cancel()
		timedOut := errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
		if err == nil || !(leaderless(err) || timedOut) || !c.Ready() {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(electionPoll):
		}
	}
}

// leaderless reports a request no server took: a stream without a leader has no subscription on its subjects,
// so nats.go answers no responders (after its own short retries, ErrNoStreamResponse).
func leaderless(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}
