package broker

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit"
)

// refuseHook stands for a hook that does not take a publish (the cluster when JetStream did not ack): it
// returns ErrRejectPacket, on which mochi drops the publish and reports no error. It records who published.
type refuseHook struct {
	mqtt.HookBase
	mu      sync.Mutex
	origins []string
}

func (h *refuseHook) ID() string           { return "test-refuse" }
func (h *refuseHook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *refuseHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.mu.Lock()
	h.origins = append(h.origins, cl.ID)
	h.mu.Unlock()
	if strings.HasPrefix(pk.TopicName, "refused/") {
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// TestPublisherReportsWhatHooksRefused: publish returns nil only for publishes every OnPublish hook took,
// also when many run at once, and the hooks see the configured publisher id.
func TestPublisherReportsWhatHooksRefused(t *testing.T) {
	m := testkit.NewMochi(testkit.MochiOptions{})
	refuse := new(refuseHook)
	pub := newHTTPPublisher(m.Server, func() string { return "$idmq-http" })
	m.Serve(t, new(auth.AllowHook), refuse, pub)
	sub, _, err := testkit.ConnectV5(t, testkit.DialTCP(t, m.TCP), testkit.JWTConnect("sub", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	if code := sub.SubscribeQoS1(t, "#"); code != 1 {
		t.Fatalf("suback %d", code)
	}
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Go(func() {
			topic := "taken/x"
			if i%2 == 1 {
				topic = "refused/x"
			}
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1,
				TopicName: topic, Payload: []byte("p"), ProtocolVersion: 5}
			errs[i] = pub.publish("$idmq-http", pk)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if refused := i%2 == 1; refused != errors.Is(err, errNotPublished) || (!refused && err != nil) {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for range 20 {
		if p := sub.Next(t, 5*time.Second); p.Topic != "taken/x" {
			t.Fatalf("delivered %s", p.Topic)
		}
	}
	select {
	case p := <-sub.Received:
		t.Fatalf("a refused publish was delivered: %s", p.Topic)
	case <-time.After(200 * time.Millisecond):
	}
	refuse.mu.Lock()
	defer refuse.mu.Unlock()
	for _, o := range refuse.origins {
		if o != "$idmq-http" {
			t.Fatalf("hook saw publisher %q", o)
		}
	}
}
