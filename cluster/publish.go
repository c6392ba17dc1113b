package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotReady: the node is not part of a working cluster right now (see Ready).
var ErrNotReady = errors.New("cluster: node is not connected to the cluster")

// natsMsg builds the stream message of msg, stamped with this node as origin and, if unset, the creation time.
// msg itself is not modified.
func (c *Cluster) natsMsg(msg *Message) *nats.Msg {
	m := *msg
	m.Origin = c.cfg.Node
	if m.Created.IsZero() {
		m.Created = c.opts.Now()
	}
	size := 64 + len(m.Origin) + len(m.Topic) + len(m.ClientID) + len(m.Payload) + len(m.ContentType) +
		len(m.ResponseTopic) + len(m.CorrelationData)
	// A fresh buffer per message: an async publish keeps it until acknowledged (and for retries).
	nm := &nats.Msg{Subject: TopicSubject(m.Topic), Data: m.encode(make([]byte, 0, size))}
	if m.DedupID != "" {
		nm.Header = nats.Header{jetstream.MsgIDHeader: []string{m.DedupID}}
	}
	return nm
}

// Publish stores msg in the stream and returns its stream sequence once JetStream acknowledged it, that is once
// a quorum of the stream's replicas holds it. It waits at most OpTimeout (less if ctx ends first).
// For many messages in a row use PublishAsync, which does not wait one round trip per message.
func (c *Cluster) Publish(ctx context.Context, msg *Message) (uint64, error) {
	if c.nc.Status() != nats.CONNECTED {
		return 0, ErrNotReady
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.OpTimeout)
	defer cancel()
	ack, err := c.js.PublishMsg(ctx, c.natsMsg(msg))
	if err != nil {
		return 0, fmt.Errorf("cluster: publishing to %q: %w", msg.Topic, err)
	}
	return ack.Sequence, nil // for a duplicate DedupID: the first copy's sequence
}

// PublishAsync sends msg to the stream without waiting for the acknowledgement; Ack.Wait returns it.
// Messages of one topic are stored in the order PublishAsync was called, so a caller that waits for its Acks in
// order acknowledges its MQTT publishers in order. While a publish of msg's topic is on its way, msg waits and
// goes with the topic's other waiting messages in one stream message (a batch, publisher.go): every Ack of a
// batch returns its sequence. Around a leader change an Ack may fail while later ones succeed; a failed message
// may still have been stored (only its ack lost): re-sent with the same DedupID it is stored once. When
// MaxPendingAcks messages are unacknowledged (in all, or waiting on one topic), PublishAsync waits up to
// OpTimeout for room, then fails: backpressure rather than unbounded memory.
func (c *Cluster) PublishAsync(msg *Message) (*Ack, error) {
	if c.nc.Status() != nats.CONNECTED {
		return nil, ErrNotReady
	}
	r, err := c.pub.publish(c.natsMsg(msg), msg.QoS == 2 || msg.DedupID != "")
	if err != nil {
		return nil, fmt.Errorf("cluster: publishing to %q: %w", msg.Topic, err)
	}
	return &Ack{r: r, topic: msg.Topic}, nil
}

// Ack is the pending acknowledgement of an asynchronous publish. It is not safe for concurrent use.
type Ack struct {
	r     *pubResult
	topic string
	done  bool
	seq   uint64
	err   error
}

// Wait returns the message's stream sequence once JetStream acknowledged it, or the error that ended it (the
// publish timed out after OpTimeout, the connection closed). If ctx ends first Wait returns ctx's error and may
// be called again; the publish itself is not cancelled.
func (a *Ack) Wait(ctx context.Context) (uint64, error) {
	if a.done {
		return a.seq, a.err
	}
	select {
	case <-a.r.done:
		a.settle()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return a.seq, a.err
}

// ready reports, without waiting, whether the ack arrived or failed; the outcome is then what Wait returns.
func (a *Ack) ready() bool {
	if a.done {
		return true
	}
	select {
	case <-a.r.done:
		a.settle()
		return true
	default:
		return false
	}
}

func (a *Ack) settle() {
	a.done, a.seq = true, a.r.seq
	if a.r.err != nil {
		a.err = fmt.Errorf("cluster: publishing to %q: %w", a.topic, a.r.err)
	}
}
