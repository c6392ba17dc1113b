package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestSharedQuota: a SUBSCRIBE's shared subscriptions beyond the client's bound, or beyond the node's bound
// on distinct groups, are refused with 0x97 Quota exceeded (the others in the same packet granted), create no
// consumer and hold no subscription in mochi; a group the node already holds, a subscription the client
// already has and an ordinary subscription are not limited, and leaving a group makes room again.
func TestSharedQuota(t *testing.T) {
	nodes := startSolo(t)
	m, h := sharedNode(t, nodes[0], HookOptions{}, 0)
	h.shared.mu.Lock()
	h.shared.maxClientGroups, h.shared.maxGroups = 2, 3
	h.shared.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	subscribe := func(c *paho.Client, filters ...string) []byte {
		t.Helper()
		sub := &paho.Subscribe{}
		for _, f := range filters {
			sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		sa, err := c.Subscribe(ctx, sub)
		if err != nil && sa == nil {
			t.Fatalf("subscribe %v: %v", filters, err)
		}
		return sa.Reasons
	}
	want := func(what string, got []byte, want ...byte) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("%s: SUBACK reasons % x; want % x", what, got, want)
		}
	}
	quota := packets.ErrQuotaExceeded.Code
	one := member(t, m.TCP, "one", "", newTally(), false)
	two := member(t, m.TCP, "two", "", newTally(), false)

	want("one: client bound 2", subscribe(one.Client, "$share/a/t", "$share/b/t", "$share/c/t", "t"), 1, 1, quota, 1)
	want("one: held groups again", subscribe(one.Client, "$share/a/t", "$share/b/t"), 1, 1)
	want("two: node bound 3", subscribe(two.Client, "$share/a/t", "$share/d/t", "$share/e/t"), 1, 1, quota)
	if shared := m.Server.Topics.Subscribers("t").Shared; shared["$share/c/t"] != nil || shared["$share/e/t"] != nil {
		t.Fatalf("mochi holds a refused subscription: %v", shared)
	}
	names := consumerNames(t, nodes[0])
	for _, g := range []string{"c", "e"} {
		if names[ShareConsumerName(g, "t")] {
			t.Fatalf("a consumer for refused group %s", g)
		}
	}

	if _, err := one.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"$share/b/t"}}); err != nil {
		t.Fatal(err)
	}
	want("one: after leaving b, an existing group", subscribe(one.Client, "$share/d/t"), 1)
	waitPulling(t, nodes[0], "d", "t", 2)
	eventually(t, 10*time.Second, "the group's leftover b gone from the node", func() bool {
		h.shared.mu.Lock()
		defer h.shared.mu.Unlock()
		return len(h.shared.groups) == 2
	})
	three := member(t, m.TCP, "three", "", newTally(), false)
	want("three: a new group once the node has room", subscribe(three.Client, "$share/e/t", "$share/f/t"), 1, quota)
}
