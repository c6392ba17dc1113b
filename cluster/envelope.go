package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Message is one MQTT PUBLISH as the cluster routes it: what a subscriber on another node needs to receive it as
// if it had been published locally.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retain   bool
	Origin   string    // the node that accepted the PUBLISH; Publish sets it
	ClientID string    // the publishing client, for MQTT 5 No Local [MQTT-3.8.3-3]
	Created  time.Time // when the node accepted it; message expiry counts from here; Publish sets it if zero

	// MQTT 5 properties forwarded unchanged [MQTT-3.3.2-4 .. -20].
	PayloadFormat    byte // 0 unspecified bytes, 1 UTF-8; meaningful when HasPayloadFormat
	HasPayloadFormat bool
	MessageExpiry    uint32 // seconds; 0: never expires
	ContentType      string
	ResponseTopic    string
	CorrelationData  []byte
	UserProperties   []UserProperty

	// DedupID, if set, makes JetStream store the message once even when published again with the same id within
	// two minutes (a retry after a lost ack). It must be unique per message, not per MQTT packet id (those are
	// reused). Not carried to subscribers.
	DedupID string
}

// UserProperty is one MQTT 5 user property; order and duplicates are kept [MQTT-3.3.2-18].
type UserProperty struct {
	Key, Value string
}

// The envelope is the stream message's body: a version byte, a flags byte, then tagged fields (tag byte, uvarint
// length, bytes) ended by tagPayload, after which the rest is the payload. A reader skips tags it does not know,
// so a newer node may add fields without breaking an older one during a rolling upgrade. No NATS headers: a
// binary body is smaller and cheaper to parse than header text on every delivery.
const (
	envelopeVersion = 1
	batchVersion    = 2 // several envelopes in one stream message: see encodeBatch

	flagRetain        = 1 << 2 // bits 0-1: QoS
	flagPayloadFormat = 1 << 3
	flagFormatUTF8    = 1 << 4

	tagPayload     = 0
	tagOrigin      = 1
	tagTopic       = 2
	tagClientID    = 3
	tagCreated     = 4 // uvarint unix milliseconds
	tagExpiry      = 5 // uvarint seconds
	tagContentType = 6
	tagRespTopic   = 7
	tagCorrData    = 8
	tagUserProp    = 9 // uvarint key length, key, value
)

// ErrBadEnvelope: a stream message that is not a routed MQTT message this version can read.
var ErrBadEnvelope = errors.New("cluster: malformed message envelope")

// encode appends m's envelope to dst.
func (m *Message) encode(dst []byte) []byte {
	flags := m.QoS & 3
	if m.Retain {
		flags |= flagRetain
	}
	if m.HasPayloadFormat {
		flags |= flagPayloadFormat
		if m.PayloadFormat == 1 {
			flags |= flagFormatUTF8
		}
	}
	dst = append(dst, envelopeVersion, flags)
	dst = appendField(dst, tagOrigin, m.Origin)
	dst = appendField(dst, tagTopic, m.Topic)
	if m.ClientID != "" {
		dst = appendField(dst, tagClientID, m.ClientID)
	}
	if !m.Created.IsZero() {
		dst = appendUvarintField(dst, tagCreated, uint64(m.Created.UnixMilli()))
	}
	if m.MessageExpiry != 0 {
		dst = appendUvarintField(dst, tagExpiry, uint64(m.MessageExpiry))
	}
	if m.ContentType != "" {
		dst = appendField(dst, tagContentType, m.ContentType)
	}
	if m.ResponseTopic != "" {
		dst = appendField(dst, tagRespTopic, m.ResponseTopic)
	}
	if m.CorrelationData != nil {
		dst = appendField(dst, tagCorrData, m.CorrelationData)
	}
	for _, p := range m.UserProperties {
		dst = append(dst, tagUserProp)
		dst = binary.AppendUvarint(dst, uint64(uvarintLen(uint64(len(p.Key)))+len(p.Key)+len(p.Value)))
		dst = binary.AppendUvarint(dst, uint64(len(p.Key)))
		dst = append(dst, p.Key...)
		dst = append(dst, p.Value...)
	}
	dst = append(dst, tagPayload)
	return append(dst, m.Payload...)
}

func appendField[T string | []byte](dst []byte, tag byte, v T) []byte {
	dst = append(dst, tag)
	dst = binary.AppendUvarint(dst, uint64(len(v)))
	return append(dst, v...)
}

func appendUvarintField(dst []byte, tag byte, v uint64) []byte {
	dst = append(dst, tag, byte(uvarintLen(v)))
	return binary.AppendUvarint(dst, v)
}

// A batch carries several messages of one topic from one node in one stream message (publisher.go): version
// byte 2, a zero byte, the origin field (as in an envelope, so originIs reads both forms), then each message as
// uvarint length + its envelope, in publish order. A batch has at least two messages.

// encodeBatch appends the batch of the envelopes parts, all published by origin.
func encodeBatch(dst []byte, origin string, parts [][]byte) []byte {
	dst = append(dst, batchVersion, 0)
	dst = appendField(dst, tagOrigin, origin)
	for _, p := range parts {
		dst = binary.AppendUvarint(dst, uint64(len(p)))
		dst = append(dst, p...)
	}
	return dst
}

// decodeMessages parses a stream message, an envelope or a batch, and calls fn with each message in order;
// it stops at the first malformed one, whose error it returns. Payload and CorrelationData alias data.
func decodeMessages(data []byte, fn func(m Message, last bool)) error {
	if len(data) > 0 && data[0] == envelopeVersion {
		m, err := decodeEnvelope(data)
		if err != nil {
			return err
		}
		fn(m, true)
		return nil
	}
	if len(data) < 3 || data[0] != batchVersion || data[2] != tagOrigin {
		return ErrBadEnvelope
	}
	n, w := binary.Uvarint(data[3:])
	if w <= 0 || n > uint64(len(data)-3-w) {
		return fmt.Errorf("%w: batch origin overruns the message", ErrBadEnvelope)
	}
	rest := data[3+w+int(n):]
	// Each part is checked before any is passed on: a reader never handles half of a malformed batch.
	var parts [][]byte
	for len(rest) > 0 {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return fmt.Errorf("%w: batch part overruns the message", ErrBadEnvelope)
		}
		parts, rest = append(parts, rest[w:w+int(n)]), rest[w+int(n):]
	}
	if len(parts) == 0 {
		return fmt.Errorf("%w: empty batch", ErrBadEnvelope)
	}
	msgs := make([]Message, len(parts))
	for i, p := range parts {
		m, err := decodeEnvelope(p)
		if err != nil {
			return err
		}
		msgs[i] = m
	}
	for i := range msgs {
		fn(msgs[i], i == len(msgs)-1)
	}
	return nil
}

// decodeEnvelope parses an envelope. Payload and CorrelationData alias data.
func decodeEnvelope(data []byte) (Message, error) {
	var m Message
	if len(data) < 2 || data[0] != envelopeVersion {
		return m, ErrBadEnvelope
	}
	flags := data[1]
	m.QoS = flags & 3
	m.Retain = flags&flagRetain != 0
	if flags&flagPayloadFormat != 0 {
		m.HasPayloadFormat = true
		if flags&flagFormatUTF8 != 0 {
			m.PayloadFormat = 1
		}
	}
	if m.QoS == 3 {
		return m, fmt.Errorf("%w: QoS 3", ErrBadEnvelope)
	}
	rest := data[2:]
	for {
		if len(rest) == 0 {
			return m, fmt.Errorf("%w: no payload marker", ErrBadEnvelope)
		}
		tag := rest[0]
		if tag == tagPayload {
			if m.Topic == "" || m.Origin == "" {
				return m, fmt.Errorf("%w: no topic or origin", ErrBadEnvelope)
			}
			m.Payload = rest[1:]
			return m, nil
		}
		n, w := binary.Uvarint(rest[1:])
		if w <= 0 || n > uint64(len(rest)-1-w) {
			return m, fmt.Errorf("%w: field %d overruns the message", ErrBadEnvelope, tag)
		}
		val := rest[1+w : 1+w+int(n)]
		rest = rest[1+w+int(n):]
		if err := m.setField(tag, val); err != nil {
			return m, err
		}
	}
}

func (m *Message) setField(tag byte, val []byte) error {
	switch tag {
	case tagOrigin:
		m.Origin = string(val)
	case tagTopic:
		m.Topic = string(val)
	case tagClientID:
		m.ClientID = string(val)
	case tagCreated, tagExpiry:
		v, w := binary.Uvarint(val)
		if w != len(val) || w <= 0 {
			return fmt.Errorf("%w: bad number in field %d", ErrBadEnvelope, tag)
		}
		if tag == tagCreated {
			m.Created = time.UnixMilli(int64(v))
		} else {
			m.MessageExpiry = uint32(min(v, 1<<32-1))
		}
	case tagContentType:
		m.ContentType = string(val)
	case tagRespTopic:
		m.ResponseTopic = string(val)
	case tagCorrData:
		m.CorrelationData = val
	case tagUserProp:
		kl, w := binary.Uvarint(val)
		if w <= 0 || kl > uint64(len(val)-w) {
			return fmt.Errorf("%w: bad user property", ErrBadEnvelope)
		}
		key := string(val[w : w+int(kl)])
		m.UserProperties = append(m.UserProperties, UserProperty{Key: key, Value: string(val[w+int(kl):])})
	}
	return nil // unknown tags come from newer nodes: skipped
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
