package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	created := time.UnixMilli(1764700000123)
	tests := []struct {
		name string
		msg  Message
	}{
		{"minimal QoS 0", Message{Topic: "a", Origin: "n1", Payload: []byte{}}},
		{"everything", Message{
			Topic: "a.b/ c/é", Payload: []byte("hello\x00world"), QoS: 2, Retain: true, Origin: "node-a",
			ClientID: "client 1", Created: created, PayloadFormat: 1, HasPayloadFormat: true, MessageExpiry: 3600,
			ContentType: "application/json", ResponseTopic: "reply/to", CorrelationData: []byte{0, 1, 2},
			UserProperties: []UserProperty{{"k", "v"}, {"k", "v2"}, {"", ""}, {"é", "日本"}},
		}},
		{"format indicator 0 present", Message{Topic: "t", Origin: "o", QoS: 1, HasPayloadFormat: true}},
		{"empty correlation data kept", Message{Topic: "t", Origin: "o", CorrelationData: []byte{}}},
		{"max expiry", Message{Topic: "t", Origin: "o", MessageExpiry: 1<<32 - 1}},
		{"large payload", Message{Topic: "t", Origin: "o", Payload: make([]byte, 1<<20)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.msg.encode(nil)
			got, err := decodeEnvelope(data)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.msg
			if want.Payload == nil {
				want.Payload = []byte{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
			if !originIs(data, tt.msg.Origin) || originIs(data, tt.msg.Origin+"x") || originIs(data, "") {
				t.Fatal("originIs disagrees with the envelope")
			}
		})
	}
}

func TestEnvelopeRejectsDamage(t *testing.T) {
	good := (&Message{Topic: "a/b", Origin: "n", ContentType: "text/plain", Payload: []byte("p")}).encode(nil)
	for n := range len(good) - 1 { // every strict prefix ends before the payload marker or inside a field
		if _, err := decodeEnvelope(good[:n]); !errors.Is(err, ErrBadEnvelope) {
			t.Errorf("prefix of %d bytes: err = %v, want ErrBadEnvelope", n, err)
		}
	}
	bad := map[string][]byte{
		"other version": append([]byte{9}, good[1:]...),
		"QoS 3":         append([]byte{envelopeVersion, 3}, good[2:]...),
		"no topic":      (&Message{Origin: "n"}).encode(nil),
		"huge length":   {envelopeVersion, 0, tagTopic, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'},
	}
	for name, data := range bad {
		if _, err := decodeEnvelope(data); !errors.Is(err, ErrBadEnvelope) {
			t.Errorf("%s: err = %v, want ErrBadEnvelope", name, err)
		}
	}
}

// TestEnvelopeSkipsUnknownFields: a field added by a newer node does not stop an older one reading the rest.
func TestEnvelopeSkipsUnknownFields(t *testing.T) {
	data := []byte{envelopeVersion, 1}
	data = appendField(data, tagOrigin, "n")
	data = appendField(data, 200, "future field")
	data = appendField(data, tagTopic, "t")
	data = append(data, tagPayload, 'x')
	m, err := decodeEnvelope(data)
	if err != nil || m.Topic != "t" || m.Origin != "n" || string(m.Payload) != "x" || m.QoS != 1 {
		t.Fatalf("got %+v, %v", m, err)
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add((&Message{Topic: "a", Origin: "n", UserProperties: []UserProperty{{"k", "v"}}}).encode(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeEnvelope(data)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes to the same message.
		again, err := decodeEnvelope(m.encode(nil))
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encode: %+v, %v; want %+v", again, err, m)
		}
	})
}

// TestBatchRoundTrip: a batch decodes to its messages in order, the last one marked; originIs reads its origin.
func TestBatchRoundTrip(t *testing.T) {
	msgs := []Message{
		{Topic: "b/x", Origin: "n1", Payload: []byte("one"), QoS: 1, ClientID: "c1"},
		{Topic: "b/x", Origin: "n1", Payload: []byte{}, ContentType: "text/plain"},
		{Topic: "b/x", Origin: "n1", Payload: make([]byte, 1000), UserProperties: []UserProperty{{"k", "v"}}},
	}
	parts := make([][]byte, len(msgs))
	for i := range msgs {
		parts[i] = msgs[i].encode(nil)
	}
	data := encodeBatch(nil, "n1", parts)
	if !originIs(data, "n1") || originIs(data, "n2") {
		t.Fatal("originIs disagrees with the batch")
	}
	var got []Message
	var lasts []bool
	if err := decodeMessages(data, func(m Message, last bool) { got, lasts = append(got, m), append(lasts, last) }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, msgs) || !reflect.DeepEqual(lasts, []bool{false, false, true}) {
		t.Fatalf("got %+v (last %v)", got, lasts)
	}
}

// TestBatchRejectsDamage: a damaged batch yields no message at all, so no reader handles half of it.
func TestBatchRejectsDamage(t *testing.T) {
	good := encodeBatch(nil, "n", [][]byte{
		(&Message{Topic: "a", Origin: "n", Payload: []byte("1")}).encode(nil),
		(&Message{Topic: "a", Origin: "n", Payload: []byte("2")}).encode(nil),
	})
	bad := map[string][]byte{
		"no parts":      encodeBatch(nil, "n", nil),
		"bad part":      encodeBatch(nil, "n", [][]byte{(&Message{Topic: "a", Origin: "n"}).encode(nil), {envelopeVersion, 3}}),
		"other version": append([]byte{7}, good[1:]...),
	}
	for n := 3; n < len(good)-1; n++ { // cut inside the second part: its length overruns the message
		if n != len(good)-len((&Message{Topic: "a", Origin: "n", Payload: []byte("2")}).encode(nil))-1 {
			bad[fmt.Sprintf("prefix %d", n)] = good[:n]
		}
	}
	for name, data := range bad {
		calls := 0
		err := decodeMessages(data, func(Message, bool) { calls++ })
		if !errors.Is(err, ErrBadEnvelope) || calls != 0 {
			t.Errorf("%s: err = %v after %d messages, want ErrBadEnvelope and none", name, err, calls)
		}
	}
}
