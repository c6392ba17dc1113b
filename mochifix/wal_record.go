package mochifix

// Part of the write-ahead log: wal_hook.go says which mochi defect it works around, what proves it and
// when it can go. This file: the records and their encoding.
//
// A record on disk is length (4 bytes, big endian), CRC32-C of the body (4), then the body: kind (1 byte),
// publish id (uvarint), then the kind's fields; strings and byte slices are uvarint-length-prefixed.

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"

	"github.com/mochi-mqtt/server/v2/packets"
)

const (
	// walCompactAt is the default size past which the log is rewritten with only its pending records.
	walCompactAt = 64 << 20
	// walMaxRecord bounds one record: MQTT's largest packet plus room for the fields around it. A longer
	// length prefix can only be garbage.
	walMaxRecord = 268435455 + 64<<10
	// walMaxAbandoned bounds the records kept for publishes whose connection died between OnPublish and
	// the fan-out (mochi returns when it cannot write the ack). They are replayed at the next start; past
	// this many, the oldest is forgotten with an error log.
	walMaxAbandoned = 10000
	walHeaderSize   = 8 // length (4) + CRC32-C (4)
)

type walKind byte

const (
	walPending walKind = 1
	walQueue   walKind = 2
	walQueued  walKind = 3
	walDone    walKind = 4
	// walAbandoned: the publisher's connection died between OnPublish and the fan-out (mochi returns when
	// it cannot write the ack). The PUBREC state was stored before that write, so the publisher can still
	// complete the QoS 2 exchange on its next connection without the message ever being delivered.
	walAbandoned walKind = 5
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// errWALCorrupt marks a record that fails to decode although its CRC matched: a bug, never a torn write.
var errWALCorrupt = errors.New("wal: corrupt record")

// walMessage is what replay needs to deliver a publish exactly as mochi would have.
type walMessage struct {
	Origin          string
	PubPacketID     uint16 // the publisher's packet id, to find its persisted PUBREC state
	Topic           string
	Payload         []byte
	QoS             byte
	Retain          bool
	ProtocolVersion byte
	Created         int64
	Expiry          int64
	Props           packets.Properties // PayloadFormat, MessageExpiryInterval, ContentType, ResponseTopic, CorrelationData, User
}

func walMessageOf(pk packets.Packet) walMessage {
	return walMessage{
		Origin: pk.Origin, PubPacketID: pk.PacketID, Topic: pk.TopicName, Payload: pk.Payload,
		QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain, ProtocolVersion: pk.ProtocolVersion,
		Created: pk.Created, Expiry: pk.Expiry,
		Props: packets.Properties{
			PayloadFormat: pk.Properties.PayloadFormat, PayloadFormatFlag: pk.Properties.PayloadFormatFlag,
			MessageExpiryInterval: pk.Properties.MessageExpiryInterval, ContentType: pk.Properties.ContentType,
			ResponseTopic: pk.Properties.ResponseTopic, CorrelationData: pk.Properties.CorrelationData,
			User: pk.Properties.User,
		},
	}
}

// packet rebuilds the publish as processPublish handed it to publishToSubscribers.
func (m *walMessage) packet() packets.Packet {
	return packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:       m.Topic,
		Payload:         m.Payload,
		Origin:          m.Origin,
		Created:         m.Created,
		Expiry:          m.Expiry,
		ProtocolVersion: m.ProtocolVersion,
		Properties:      m.Props.Copy(false),
	}
}

// walEncoding: a record body is kind (1 byte), id (uvarint), then the kind's fields; strings and byte
// slices are uvarint-length-prefixed.

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func (m *walMessage) encode(b []byte) []byte {
	b = appendString(b, m.Origin)
	b = binary.AppendUvarint(b, uint64(m.PubPacketID))
	b = appendString(b, m.Topic)
	b = appendBytes(b, m.Payload)
	b = append(b, m.QoS, m.ProtocolVersion)
	b = appendBool(b, m.Retain)
	b = binary.AppendVarint(b, m.Created)
	b = binary.AppendVarint(b, m.Expiry)
	p := &m.Props
	b = append(b, p.PayloadFormat)
	b = appendBool(b, p.PayloadFormatFlag)
	b = binary.AppendUvarint(b, uint64(p.MessageExpiryInterval))
	b = appendString(b, p.ContentType)
	b = appendString(b, p.ResponseTopic)
	b = appendBytes(b, p.CorrelationData)
	b = binary.AppendUvarint(b, uint64(len(p.User)))
	for _, u := range p.User {
		b = appendString(b, u.Key)
		b = appendString(b, u.Val)
	}
	return b
}

// walDecoder reads fields, bounds-checked; the first error sticks and later reads return zero values.
type walDecoder struct {
	b   []byte
	err error
}

func (d *walDecoder) fail() { d.err, d.b = errWALCorrupt, nil }

func (d *walDecoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *walDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *walDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *walDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := slices.Clone(d.b[:n])
	d.b = d.b[n:]
	return v
}

func (d *walDecoder) string() string { return string(d.bytes()) }

func (d *walDecoder) message() walMessage {
	var m walMessage
	m.Origin = d.string()
	m.PubPacketID = uint16(d.uvarint())
	m.Topic = d.string()
	m.Payload = d.bytes()
	m.QoS = d.byte()
	m.ProtocolVersion = d.byte()
	m.Retain = d.byte() == 1
	m.Created = d.varint()
	m.Expiry = d.varint()
	p := &m.Props
	p.PayloadFormat = d.byte()
	p.PayloadFormatFlag = d.byte() == 1
	p.MessageExpiryInterval = uint32(d.uvarint())
	p.ContentType = d.string()
	p.ResponseTopic = d.string()
	p.CorrelationData = d.bytes()
	if n := d.uvarint(); n > 0 {
		if n > uint64(len(d.b)) { // each property takes at least two bytes: bound before allocating
			d.fail()
			return m
		}
		p.User = make([]packets.UserProperty, 0, n)
		for range n {
			p.User = append(p.User, packets.UserProperty{Key: d.string(), Val: d.string()})
		}
	}
	return m
}
