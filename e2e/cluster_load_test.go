package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// killRuns is how many fresh clusters each kill variant runs: IDMQ_CLUSTER_KILL_RUNS, 3 by default (CI);
// the acceptance is 20 runs locally.
func killRuns(t *testing.T) int {
	t.Helper()
	s := os.Getenv("IDMQ_CLUSTER_KILL_RUNS")
	if s == "" {
		return 3
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("IDMQ_CLUSTER_KILL_RUNS=%q: want a positive number of runs", s)
	}
	return n
}

// killVariant names which node a run kills with SIGKILL while the load runs.
type killVariant struct {
	name string
	// victim picks the node to kill among the three, given the stream leader's index.
	victim func(leader int) int
	// persistentSubscriber adds a clean_start=false subscriber on the victim that, once its node is gone,
	// reconnects to a survivor and must receive every acknowledged message (needs sessions that move).
	persistentSubscriber bool
}

// TestClusterKillUnderLoad: publishers on the surviving nodes send QoS 1 and QoS 2 without pause while a node
// dies with SIGKILL: the stream leader's, or that of a persistent subscriber, which then resumes its session on
// a survivor. Every message a publisher saw acknowledged (PUBACK, PUBCOMP) reaches every subscriber, no QoS 2
// message arrives twice, and the survivors keep acknowledging after the kill.
func TestClusterKillUnderLoad(t *testing.T) {
	runs := killRuns(t)
	variants := []killVariant{
		{name: "stream-leader", victim: func(leader int) int { return leader }},
		// The subscriber's node: its persistent session resumes on a survivor, QoS 2 exactly once.
		{name: "subscriber-node", persistentSubscriber: true, victim: func(leader int) int { return (leader + 1) % 3 }},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			var sum killTally
			for i := range runs {
				t.Run(fmt.Sprintf("run%02d", i+1), func(t *testing.T) { sum.add(killRun(t, v)) })
			}
			t.Logf("%s, %d runs: %s", v.name, runs, sum.String())
		})
	}
}

// killTally is what one or more runs counted.
type killTally struct {
	acked1, acked2, afterKill, lost, dup2, dup1 int
	replaced                                    int           // survivors whose routing consumer the watchdog replaced
	again                                       int           // the moved subscriber's connections the broker ended (it resumed again)
	recovery                                    time.Duration // slowest run: kill to first ack of every publisher
}

func (s *killTally) add(o killTally) {
	s.acked1 += o.acked1
	s.acked2 += o.acked2
	s.afterKill += o.afterKill
	s.lost += o.lost
	s.dup2 += o.dup2
	s.dup1 += o.dup1
	s.replaced += o.replaced
	s.again += o.again
	s.recovery = max(s.recovery, o.recovery)
}

func (s killTally) String() string {
	return fmt.Sprintf("acknowledged QoS 1 %d, QoS 2 %d (%d after the kill); lost %d; QoS 2 duplicates %d; "+
		"QoS 1 duplicates %d (allowed); slowest recovery %s; stalled routing consumers replaced %d; moved subscriber "+
		"resumed again %d", s.acked1, s.acked2, s.afterKill, s.lost, s.dup2, s.dup1, s.recovery.Round(time.Millisecond),
		s.replaced, s.again)
}

const (
	loadFilter   = "users/alice/load/#"
	loadInflight = 8                      // concurrent unacknowledged publishes per publisher
	loadBefore   = 2 * time.Second        // load before the kill
	loadAfter    = 3 * time.Second        // load after every publisher had an ack again
	recoverBound = 30 * time.Second       // every publisher acknowledged again within this after the kill
	deliverBound = 30 * time.Second       // every acknowledged message delivered within this after the load
	loadAckWait  = 15 * time.Second       // one publish's wait for its ack
	quietSub     = 500 * time.Millisecond // sampling interval while waiting for deliveries
)

// killRun is one fresh three-node cluster, its load, one SIGKILL and the count.
func killRun(t *testing.T, v killVariant) killTally {
	nodes := startIdmqCluster(t)
	leader := streamLeaderIndex(t, nodes)
	vi := v.victim(leader)
	victim := nodes[vi]
	var survivors []*idmqProc
	for i, n := range nodes {
		if i != vi {
			survivors = append(survivors, n)
		}
	}
	token := nodes[0].token("alice") // one signing key: valid on every node
	t.Logf("stream leader n%d, killing n%d", leader, vi)

	var subs []*loadSubscriber
	for i, n := range survivors {
		subs = append(subs, newLoadSubscriber(t, n, token, fmt.Sprintf("sub-%d", i), true))
	}
	var moving *loadSubscriber
	if v.persistentSubscriber {
		moving = newLoadSubscriber(t, victim, token, "sub-moving", false)
		subs = append(subs, moving)
	}

	ctx, stop := context.WithCancel(context.Background())
	var pubs []*loadPublisher
	var wg sync.WaitGroup
	for i, n := range survivors {
		for _, qos := range []byte{1, 2} {
			p := &loadPublisher{t: t, node: n, token: token, name: fmt.Sprintf("pub%d-q%d", i, qos), qos: qos, acked: map[string]time.Time{}}
			pubs = append(pubs, p)
			wg.Go(func() { p.run(ctx) })
		}
	}
	time.Sleep(loadBefore)
	for _, p := range pubs {
		if p.ackCount() == 0 {
			stop()
			wg.Wait()
			t.Fatalf("%s had no message acknowledged in %s before the kill", p.name, loadBefore)
		}
	}

	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for _, p := range pubs {
		p.killedAt.Store(killed.UnixNano())
	}
	<-victim.exited
	if moving != nil {
		moving.reconnect(t, survivors[0])
	}
	// Every publisher must be acknowledged again: the survivors took over the stream.
	recovered := true
	for time.Since(killed) < recoverBound {
		recovered = true
		for _, p := range pubs {
			recovered = recovered && p.afterKill.Load() > 0
		}
		if recovered {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	recovery := time.Since(killed)
	time.Sleep(loadAfter)
	stop()
	wg.Wait()
	if !recovered {
		for _, p := range pubs {
			t.Logf("%s: %d acknowledged after the kill, last error %v", p.name, p.afterKill.Load(), p.lastError())
		}
		t.Fatalf("not every publisher was acknowledged again within %s of the kill", recoverBound)
	}

	var tally killTally
	tally.recovery = recovery
	for _, p := range pubs {
		t.Logf("%s: acknowledged again %s after the kill (%d connections; last error: %v)", p.name,
			time.Duration(p.firstBack.Load()-killed.UnixNano()).Round(time.Millisecond), p.conns.Load(), p.lastError())
	}
	want := map[string]time.Time{} // every acknowledged payload and when
	for _, p := range pubs {
		for k, at := range p.acked {
			want[k] = at
		}
		if p.qos == 1 {
			tally.acked1 += len(p.acked)
		} else {
			tally.acked2 += len(p.acked)
		}
		tally.afterKill += int(p.afterKill.Load())
	}
	for _, s := range subs {
		select {
		case <-s.conn().Done():
			t.Errorf("%s: its connection ended during the run", s.name)
		default:
		}
		missing := s.awaitAll(want, deliverBound)
		if len(missing) > 0 {
			t.Errorf("%s: %d acknowledged messages missing %s after the load: %s", s.name, len(missing), deliverBound,
				describeMissing(missing, want, killed))
			late := s.awaitAll(want, deliverBound) // a stall or a loss?
			t.Logf("%s: %d of them arrived within another %s", s.name, len(missing)-len(late), deliverBound)
		}
		got := s.snapshot()
		tally.again += int(s.again.Load())
		tally.lost += len(missing)
		for k, n := range got {
			if n.count > 1 && n.qos == 2 {
				t.Errorf("%s: QoS 2 %q arrived %d times", s.name, k, n.count)
				tally.dup2++
			} else if n.count > 1 {
				tally.dup1++
			}
		}
		s.close()
	}
	for i, n := range nodes {
		if i != vi && n.logs.Contains("routing consumer stalled") {
			t.Logf("n%d: its routing consumer stalled after the kill and was replaced", i)
			tally.replaced++
		}
	}
	t.Logf("run: %s", tally.String())
	return tally
}

// streamLeaderIndex asks GET /v1/cluster which node leads the message stream (its server name is the node name
// n0..n2); it waits for a leader to be known.
func streamLeaderIndex(t *testing.T, nodes []*idmqProc) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, st := nodes[0].admin(t, "GET", "/v1/cluster", clusterAdminKey, "")
		if l, _ := st["stream_leader"].(string); code == 200 && strings.HasPrefix(l, "n") {
			if i, err := strconv.Atoi(l[1:]); err == nil && i >= 0 && i < len(nodes) {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/cluster names no stream leader: %d %v", code, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
