package mochifix

// Defect: mochi v2.7.9 logs whole packets, payload bytes included: "error processing packet" (warn; e.g.
// a 3.1.1 QoS 1/2 publish the ACL denied), "publish packet rejected" and "packet rejected" (debug; a hook
// that rejects a publish), "failed publishing packet" (debug). Payloads carry user data, and a client
// controls how often the line is written.
// Fix: Logger wraps the handler of the logger given to mochi (mqtt.Options.Logger) and replaces every
// packets.Packet attribute with its header: type, packet id, QoS, retain, topic and payload size.
// Upstream: none filed.
// Proof: TestLoggerRedactsPackets (logredact_test.go), TestDeniedPublishPayloadNeverLogged (e2e).
// Delete when: mochi logs packet headers only.

import (
	"context"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Logger returns l with every packets.Packet attribute reduced to its header; give it to mochi as
// mqtt.Options.Logger. Lines without a packet are passed through unchanged.
func Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return nil
	}
	return slog.New(redactingHandler{l.Handler()})
}

type redactingHandler struct{ next slog.Handler }

func (h redactingHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	redacted := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		redacted[i] = redactAttr(a)
	}
	return redactingHandler{h.next.WithAttrs(redacted)}
}

func (h redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindAny:
		switch pk := a.Value.Any().(type) {
		case packets.Packet:
			return slog.Attr{Key: a.Key, Value: packetHeader(&pk)}
		case *packets.Packet:
			if pk != nil {
				return slog.Attr{Key: a.Key, Value: packetHeader(pk)}
			}
		}
	case slog.KindGroup:
		group := a.Value.Group()
		redacted := make([]slog.Attr, len(group))
		for i, g := range group {
			redacted[i] = redactAttr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(redacted...)}
	}
	return a
}

// packetHeader is what a log line may say about a packet: never its payload, password or properties.
func packetHeader(pk *packets.Packet) slog.Value {
	attrs := []slog.Attr{
		slog.String("type", packets.PacketNames[pk.FixedHeader.Type]),
		slog.Int("id", int(pk.PacketID)),
	}
	if pk.FixedHeader.Type == packets.Publish {
		attrs = append(attrs,
			slog.Int("qos", int(pk.FixedHeader.Qos)),
			slog.Bool("retain", pk.FixedHeader.Retain),
			slog.String("topic", pk.TopicName),
			slog.Int("payload_bytes", len(pk.Payload)))
	}
	return slog.GroupValue(attrs...)
}
