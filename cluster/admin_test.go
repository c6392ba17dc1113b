package cluster

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestAskAllMarksSilentNodes: every live node's answer comes back by node; a live node that does not answer
// is named, not waited for beyond AdminTimeout.
func TestAskAllMarksSilentNodes(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	stops := make([]func(), len(nodes))
	for i, c := range nodes {
		stop, err := c.HandleRequests("echo", func(req []byte) []byte { return append([]byte(c.Node()+":"), req...) })
		if err != nil {
			t.Fatal(err)
		}
		stops[i] = stop
	}
	eventually(t, 5*time.Second, "three live nodes", func() bool { return len(nodes[0].LiveNodes()) == 3 })
	var answers map[string][]byte
	var unanswered []string
	// Subscription interest reaches the other servers over the routes a moment after it is made.
	eventually(t, 5*time.Second, "three answers", func() bool {
		answers, unanswered = nodes[0].AskAll(context.Background(), "echo", []byte("hi"))
		return len(answers) == 3
	})
	if len(answers) != 3 || len(unanswered) != 0 {
		t.Fatalf("answers %q, unanswered %v; want all three", answers, unanswered)
	}
	for _, c := range nodes {
		if got := string(answers[c.Node()]); got != c.Node()+":hi" {
			t.Errorf("%s answered %q", c.Node(), got)
		}
	}
	stops[2]()
	answers, unanswered = nodes[0].AskAll(context.Background(), "echo", nil)
	if len(answers) != 2 || !slices.Equal(unanswered, []string{nodes[2].Node()}) {
		t.Fatalf("answers %q, unanswered %v; want %s unanswered", answers, unanswered, nodes[2].Node())
	}
	if _, err := nodes[0].Ask(context.Background(), nodes[2].Node(), "echo", nil); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Ask of a silent node = %v, want ErrNoAnswer", err)
	}
}
