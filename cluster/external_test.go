package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The external NATS is the nats-server of our go.mod, built once per test binary: the Debian package is too old
// for the JetStream features used.
var (
	natsServerOnce sync.Once
	natsServerBin  string
	natsServerErr  error
	natsServerDir  string
)

func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsServerOnce.Do(func() {
		natsServerDir, natsServerErr = os.MkdirTemp("", "idmq-cluster-nats-")
		if natsServerErr != nil {
			return
		}
		natsServerBin = filepath.Join(natsServerDir, "nats-server")
		out, err := exec.Command("go", "build", "-o", natsServerBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsServerErr = fmt.Errorf("building nats-server: %v\n%s", err, out)
		}
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return natsServerBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if natsServerDir != "" {
		os.RemoveAll(natsServerDir)
	}
	os.Exit(code)
}

// externalNATS is a nats-server process with JetStream on a loopback port.
type externalNATS struct {
	cmd              *exec.Cmd
	bin, dir, secret string
	port             int
}

func startExternalNATS(t *testing.T, x *externalNATS) {
	t.Helper()
	x.cmd = exec.Command(x.bin, "-a", "127.0.0.1", "-p", fmt.Sprint(x.port), "-js", "-sd", x.dir,
		"--auth", x.secret, "-n", "external")
	if err := x.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.cmd.Process.Kill(); x.cmd.Wait() })
	eventually(t, 10*time.Second, "external nats-server accepting", func() bool {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", x.port))
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

// TestExternalNATS: two nodes share one external nats-server through nats.url: automatic replicas pick 1 for a
// standalone server, messages route between the nodes, a SIGKILL of the server makes both not ready at once, and
// they recover by themselves when it is back, with the stream's data intact and routing resumed.
func TestExternalNATS(t *testing.T) {
	x := &externalNATS{bin: natsServerBinary(t), dir: t.TempDir(), secret: "s3cret-token", port: freePort(t)}
	startExternalNATS(t, x)
	cfgs := make([]Config, 2)
	for i := range cfgs {
		cfgs[i] = Config{Node: fmt.Sprintf("ext-%d", i), NATS: NATSConfig{
			URL: fmt.Sprintf("nats://%s@127.0.0.1:%d", x.secret, x.port)}}
		cfgs[i].SetDefaults(t.TempDir())
		if err := cfgs[i].Validate(); err != nil {
			t.Fatal(err)
		}
	}
	nodes := startNodes(t, cfgs)
	a, b := nodes[0], nodes[1]
	if a.Replicas() != 1 {
		t.Fatalf("automatic replicas on a standalone server = %d, want 1", a.Replicas())
	}
	ra, rb := consume(t, a, ConsumeOptions{}), consume(t, b, ConsumeOptions{})
	ctx := context.Background()
	first, err := a.Publish(ctx, &Message{Topic: "ext/a.b c", Payload: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	got := rb.waitFor(t, 1, 5*time.Second)
	if len(got) != 1 || got[0].Topic != "ext/a.b c" || got[0].Origin != "ext-0" || len(ra.snapshot()) != 0 {
		t.Fatalf("b got %+v; a got %d of its own", got, len(ra.snapshot()))
	}
	if m := nodeNames(t, b); len(m.Nodes) != 2 || m.StreamLeader != "external" {
		t.Fatalf("membership %+v", m)
	}

	x.cmd.Process.Kill() // SIGKILL
	x.cmd.Wait()
	bound := readyBeats*testOpts.Heartbeat + 500*time.Millisecond
	for _, c := range nodes {
		took := eventually(t, bound, c.Node()+" not ready after the NATS server died", func() bool { return !c.Ready() })
		t.Logf("%s not ready after %s: %v", c.Node(), took, c.ReadyErr())
	}

	startExternalNATS(t, x)
	for _, c := range nodes {
		took := eventually(t, 10*time.Second, c.Node()+" ready again", c.Ready)
		t.Logf("%s ready again %s after the restart", c.Node(), took)
	}
	var seq uint64
	eventually(t, 10*time.Second, "publishing after the restart", func() bool {
		seq, err = b.Publish(ctx, &Message{Topic: "ext/again"})
		return err == nil
	})
	if seq <= first {
		t.Fatalf("sequence %d after restart, not after %d: the stream lost its data", seq, first)
	}
	// Routing resumes: node a's ordered consumer was lost with the server and is recreated by the client.
	took := eventually(t, 10*time.Second, "routing after the restart", func() bool {
		return countTopic(ra.snapshot(), "ext/again") == 1
	})
	t.Logf("routing resumed %s after the first successful publish", took)
}

// TestExternalReplicasBeyondServers: three copies asked of a standalone server fail at start with an error that
// names the setting, and leave nothing running.
func TestExternalReplicasBeyondServers(t *testing.T) {
	x := &externalNATS{bin: natsServerBinary(t), dir: t.TempDir(), secret: "tok", port: freePort(t)}
	startExternalNATS(t, x)
	cfg := Config{Node: "ext", Replicas: 3, NATS: NATSConfig{URL: fmt.Sprintf("nats://tok@127.0.0.1:%d", x.port)}}
	cfg.SetDefaults("")
	c, err := Start(context.Background(), cfg, testOptions(t))
	if err == nil {
		c.Close()
		t.Fatal("started with replicas 3 on one server")
	}
	if !errors.Is(err, ErrReplicas) || !strings.Contains(err.Error(), "cluster.replicas is 3") {
		t.Fatalf("err = %v, want ErrReplicas naming cluster.replicas", err)
	}
	t.Log(err)
}
