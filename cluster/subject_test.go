package cluster

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func TestTopicSubjectCases(t *testing.T) {
	tests := []struct {
		name, topic, subject string
	}{
		{"plain levels", "sensors/temp-1", "idmq.m.sensors.temp-1"},
		{"dot inside a level", "a.b/c", "idmq.m._a_2eb.c"},
		{"space", "room 1/temp", "idmq.m._room_201.temp"},
		{"star and gt", "*/>", "idmq.m.__2a.__3e"},
		{"star inside", "a*b", "idmq.m._a_2ab"},
		{"empty levels", "/a//", "idmq.m._.a._._"},
		{"single slash", "/", "idmq.m._._"},
		{"non-ASCII", "café/日本", "idmq.m._caf_c3_a9.__e6_97_a5_e6_9c_ac"},
		{"dollar", "$SYS/broker", "idmq.m.__24SYS.broker"},
		{"underscore is escaped", "a_b", "idmq.m._a_5fb"},
		{"tab and newline", "a\tb/\n", "idmq.m._a_09b.__0a"},
		{"mqtt wildcard chars", "+/#", "idmq.m.__2b.__23"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := TopicSubject(tt.topic)
			if got != tt.subject {
				t.Fatalf("TopicSubject(%q) = %q, want %q", tt.topic, got, tt.subject)
			}
			back, err := TopicOf(got)
			if err != nil || back != tt.topic {
				t.Fatalf("TopicOf(%q) = %q, %v; want %q", got, back, err, tt.topic)
			}
			checkSubject(t, tt.topic, got)
		})
	}
}

// kvKey is the key syntax nats.go accepts for KV buckets.
var kvKey = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

func checkSubject(t *testing.T, topic, subj string) {
	t.Helper()
	if !server.IsValidLiteralSubject(subj) {
		t.Fatalf("TopicSubject(%q) = %q: not a valid literal NATS subject", topic, subj)
	}
	if len(subj) > maxSubjectLen {
		t.Fatalf("TopicSubject(%q) is %d bytes, more than %d", topic, len(subj), maxSubjectLen)
	}
	if k := RetainedKey(topic); !kvKey.MatchString(k) || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") {
		t.Fatalf("RetainedKey(%q) = %q: not a valid KV key", topic, k)
	}
}

func TestTopicOfRejectsForeignSubjects(t *testing.T) {
	for _, s := range []string{
		"other.a", "idmq.m.a_b", "idmq.m._ab", "idmq.m._a_2", "idmq.m._a_2g", "idmq.m._a_41", "idmq.m._a_2E",
		"idmq.m.a..b", "idmq.m.",
	} {
		if got, err := TopicOf(s); !errors.Is(err, ErrNotTopicSubject) {
			t.Errorf("TopicOf(%q) = %q, %v; want ErrNotTopicSubject", s, got, err)
		}
	}
	long := TopicSubject(strings.Repeat("x", 2000))
	if _, err := TopicOf(long); !errors.Is(err, ErrTruncatedSubject) {
		t.Errorf("TopicOf(long subject) = %v, want ErrTruncatedSubject", err)
	}
}

var levelPool = []string{"", "a", "b", "a.b", ".", " ", "*", ">", "a*", "é", "日本", "_", "$x", "%", "-", "a_2e",
	"_a", "x y", "\x00", "\u2028", "A9-"}

func randomTopic(r *rand.Rand) string {
	n := 1 + r.IntN(5)
	levels := make([]string, n)
	for i := range levels {
		switch r.IntN(40) {
		case 0: // long enough to force the hashed form
			levels[i] = strings.Repeat(levelPool[r.IntN(len(levelPool))]+"é.", 150+r.IntN(200))
		case 1:
			levels[i] = levelPool[r.IntN(len(levelPool))] + levelPool[r.IntN(len(levelPool))]
		default:
			levels[i] = levelPool[r.IntN(len(levelPool))]
		}
	}
	return strings.Join(levels, "/")
}

// TestTopicSubjectInjective: over many random topics full of NATS-hostile characters, no two topics share a
// subject, every subject is valid, and every short one decodes back to its topic.
func TestTopicSubjectInjective(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bySubject := map[string]string{}
	for range 50000 {
		topic := randomTopic(r)
		subj := TopicSubject(topic)
		if prev, ok := bySubject[subj]; ok && prev != topic {
			t.Fatalf("%q and %q both map to %q", prev, topic, subj)
		}
		bySubject[subj] = topic
		checkSubject(t, topic, subj)
		back, err := TopicOf(subj)
		if strings.HasPrefix(subj, LongSubjectPrefix) {
			if !errors.Is(err, ErrTruncatedSubject) {
				t.Fatalf("TopicOf(%q) = %v, want ErrTruncatedSubject", subj, err)
			}
			continue
		}
		if err != nil || back != topic {
			t.Fatalf("TopicOf(TopicSubject(%q)) = %q, %v", topic, back, err)
		}
	}
	if len(bySubject) < 10000 {
		t.Fatalf("only %d distinct topics generated; the test proves little", len(bySubject))
	}
}

func FuzzTopicSubject(f *testing.F) {
	for _, s := range []string{"a/b", "a.b", "", "/", "*/>", "é", "$SYS/#", strings.Repeat("a/", 600)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		subj := TopicSubject(topic)
		checkSubject(t, topic, subj)
		back, err := TopicOf(subj)
		if strings.HasPrefix(subj, LongSubjectPrefix) {
			if !errors.Is(err, ErrTruncatedSubject) {
				t.Fatalf("TopicOf(%q) = %v, want ErrTruncatedSubject", subj, err)
			}
			return
		}
		if err != nil || back != topic {
			t.Fatalf("TopicOf(TopicSubject(%q)) = %q, %v", topic, back, err)
		}
	})
}

// mqttMatch is the MQTT topic filter match, without the '$' rule (FilterSubjects may over-select).
func mqttMatch(filter, topic string) bool {
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) || (f != "+" && f != tl[i]) {
			return false
		}
	}
	return len(fl) == len(tl)
}

// filterFor derives a filter from a topic: some levels become '+', maybe a tail becomes '#'.
func filterFor(r *rand.Rand, topic string) string {
	levels := strings.Split(topic, "/")
	var out []string
	for _, l := range levels {
		switch r.IntN(6) {
		case 0:
			out = append(out, "+")
		case 1:
			return strings.Join(append(out, "#"), "/")
		default:
			out = append(out, l)
		}
	}
	if r.IntN(4) == 0 {
		out = append(out, "#")
	}
	return strings.Join(out, "/")
}

// TestFilterSubjectsCover: whenever an MQTT filter matches a topic, one of its subject filters matches the
// topic's subject (long topics included), and a filter's subject filters never overlap (JetStream refuses that).
func TestFilterSubjectsCover(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		topic := randomTopic(r)
		filter := filterFor(r, topic)
		if r.IntN(3) == 0 { // also filters derived from another topic: mostly non-matching
			filter = filterFor(r, randomTopic(r))
		}
		subs := FilterSubjects(filter)
		for i, a := range subs {
			if !server.IsValidSubject(a) {
				t.Fatalf("FilterSubjects(%q) has invalid %q", filter, a)
			}
			for _, b := range subs[i+1:] {
				if server.SubjectsCollide(a, b) {
					t.Fatalf("FilterSubjects(%q): %q and %q overlap", filter, a, b)
				}
			}
		}
		if !mqttMatch(filter, topic) {
			continue
		}
		subj := TopicSubject(topic)
		hit := false
		for _, s := range subs {
			hit = hit || server.SubjectMatchesFilter(subj, s)
		}
		if !hit {
			t.Fatalf("filter %q matches topic %q, but none of %q matches %q", filter, topic, subs, subj)
		}
	}
}

func TestFilterSubjectsNarrow(t *testing.T) {
	tests := []struct {
		filter string
		want   []string
	}{
		{"a/b", []string{"idmq.t.*", "idmq.t.a.*", "idmq.m.a.b"}},
		{"a/+/c", []string{"idmq.t.*", "idmq.t.a.*", "idmq.t.a.*.*", "idmq.m.a.*.c"}},
		{"#", []string{"idmq.m.>", "idmq.t.>"}},
		{"a.b/#", []string{"idmq.t.*", "idmq.m._a_2eb", "idmq.m._a_2eb.>", "idmq.t._a_2eb.>"}},
	}
	for _, tt := range tests {
		if got := FilterSubjects(tt.filter); strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("FilterSubjects(%q) = %q, want %q", tt.filter, got, tt.want)
		}
	}
	// The narrowing is real: a filter on sensors/+ does not select other trees.
	for _, s := range FilterSubjects("sensors/+") {
		if server.SubjectMatchesFilter(TopicSubject("other/x"), s) {
			t.Errorf("%q selects other/x", s)
		}
	}
}

// TestClientKey: any client id, hostile or long, is a valid KV key distinct from every other id's key.
func TestClientKey(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	byKey := map[string]string{}
	ids := []string{"", "a", "a.b", "a b", "*", ">", "é", "_", "=", strings.Repeat("x", 600), strings.Repeat("x", 601)}
	for range 20000 {
		ids = append(ids, randomTopic(r))
	}
	for _, id := range ids {
		k := ClientKey(id)
		if !kvKey.MatchString(k) || strings.Contains(k, ".") || len(k) > maxClientKeyLen {
			t.Fatalf("ClientKey(%q) = %q: not a single valid KV key token", id, k)
		}
		if prev, ok := byKey[k]; ok && prev != id {
			t.Fatalf("%q and %q share key %q", prev, id, k)
		}
		byKey[k] = id
	}
}
