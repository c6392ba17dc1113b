package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// How a resumed session's replay reads the stream: one ephemeral, unacknowledged consumer per replay,
// filtered to the session's subjects, read in batches, deleted when the replay ends.

// open creates the replay's consumer from r.next.
func (r *replay) open() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.m.c.opts.OpTimeout)
	defer cancel()
	cons, err := r.m.c.b.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Description:       "idmq: replay of a resumed session on " + r.node,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.next,
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubjects:    r.subjs,
		InactiveThreshold: time.Minute, // removed by the server if this node dies meanwhile
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return err
	}
	r.cons, r.reopen, r.delivered = cons, false, 0
	r.left = cons.CachedInfo().NumPending
	return nil
}

func (r *replay) closeConsumer() {
	if r.cons == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.m.c.opts.OpTimeout)
	defer cancel()
	_ = r.m.c.b.stream.DeleteConsumer(ctx, r.cons.CachedInfo().Name)
}

// fetch reads the next batch into r.buf; a consumer lost with its server is created again where it stopped,
// for up to resumeWithin. The consumer is unacknowledged: the server counts a message delivered once sent, so
// a response lost on its way (a leader change, a pull request that expired as the server answered it) would be
// a silent gap. Consumer sequences tell one (each delivery is the last one + 1): the consumer is then created
// again from the first stream sequence not received.
func (r *replay) fetch() error {
	deadline := time.Now().Add(resumeWithin)
	for {
		n := int(min(uint64(replayBatch), max(r.left, 1)))
		batch, err := r.cons.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
		got, gap := 0, false
		if err == nil {
			for msg := range batch.Messages() {
				meta, merr := msg.Metadata()
				if merr != nil || gap {
					continue
				}
				if meta.Sequence.Consumer != r.delivered+1 {
					gap = true
					continue
				}
				got++
				r.delivered = meta.Sequence.Consumer
				r.next, r.left = meta.Sequence.Stream+1, meta.NumPending
				seq := meta.Sequence.Stream
				_ = decodeMessages(msg.Data(), func(dm Message, last bool) {
					r.buf = append(r.buf, Delivery{Message: dm, Seq: seq, More: !last})
				})
			}
			err = batch.Error()
		}
		if gap {
			r.m.c.log.Warn("cluster: a resumed session's replay missed stream messages; reading again", "client",
				r.cl.ID, "from", r.next)
		}
		if !gap && (got > 0 || (err == nil || errors.Is(err, jetstream.ErrNoMessages)) && got == 0) {
			if got == 0 {
				r.left = 0 // nothing more (messages counted earlier may have aged out)
			}
			return nil
		}
		if err == nil {
			err = errors.New("cluster: the replay kept missing stream messages")
		}
		if time.Now().After(deadline) || r.cl.Closed() {
			return err
		}
		r.closeConsumer()
		for r.open() != nil {
			if time.Now().After(deadline) || r.cl.Closed() {
				return err
			}
			time.Sleep(250 * time.Millisecond)
		}
		if got > 0 {
			return nil // what was read before the gap goes first
		}
	}
}

// receivedAll checks that every message the replay's consumer sent arrived (a last fetch's lost response would
// otherwise go unnoticed: nothing follows it to show the gap).
func (r *replay) receivedAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.m.c.opts.OpTimeout)
	defer cancel()
	ci, err := r.cons.Info(ctx)
	if err != nil {
		return err
	}
	if ci.Delivered.Consumer != r.delivered {
		return errReplayGap
	}
	return nil
}

// disjointSubjects drops subject filters another one covers; if some still overlap (a JetStream consumer
// refuses overlapping filters), it returns every routed subject instead: the replay's MQTT match sorts it out.
func disjointSubjects(subjs []string) []string {
	var out []string
	for i, s := range subjs {
		covered := false
		for j, o := range subjs {
			if i != j && subjectCovers(o, s) && (!subjectCovers(s, o) || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, s)
		}
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if subjectsCollide(out[i], out[j]) {
				return []string{SubjectPrefix + ">", LongSubjectPrefix + ">"}
			}
		}
	}
	return out
}

// subjectCovers: every subject filter s matches, filter o matches too.
func subjectCovers(o, s string) bool { return server.SubjectMatchesFilter(s, o) }

func subjectsCollide(a, b string) bool { return server.SubjectsCollide(a, b) }
