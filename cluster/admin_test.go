package cluster

import (
	"context"
	"errors"
	"slices"
	"testing"
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
	answers, unanswered, err := nodes[0].AskAll(context.Background(), "echo", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if len(answers) != 3 || len(unanswered) != 0 {
		t.Fatalf("answers %q, unanswered %v; want all three", answers, unanswered)
	}
	for _, c := range nodes {
		if got := string(answers[c.Node()]); got != c.Node()+":hi" {
			t.Errorf("%s answered %q", c.Node(), got)
		}
	}
	stops[2]()
	answers, unanswered, err = nodes[0].AskAll(context.Background(), "echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(answers) != 2 || !slices.Equal(unanswered, []string{nodes[2].Node()}) {
		t.Fatalf("answers %q, unanswered %v; want %s unanswered", answers, unanswered, nodes[2].Node())
	}
	if _, err := nodes[0].Ask(context.Background(), nodes[2].Node(), "echo", nil); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Ask of a silent node = %v, want ErrNoAnswer", err)
	}
}
