package wire

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// What WritePacket writes, ReadPacket reads back the same, in both protocol versions.
func TestPacketRoundTrip(t *testing.T) {
	for _, version := range []byte{4, 5} {
		for _, pk := range []packets.Packet{
			{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", Payload: []byte("hi"), PacketID: 7},
			{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 8},
			{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 9},
			{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 10},
			{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: 11},
		} {
			pk.ProtocolVersion = version
			var wire bytes.Buffer
			if err := WritePacket(&wire, &pk); err != nil {
				t.Fatal(err)
			}
			got, err := ReadPacket(bufio.NewReader(&wire), version)
			if err != nil {
				t.Fatalf("v%d %s: %v", version, packets.PacketNames[pk.FixedHeader.Type], err)
			}
			if got.FixedHeader.Type != pk.FixedHeader.Type || got.PacketID != pk.PacketID ||
				got.TopicName != pk.TopicName || !bytes.Equal(got.Payload, pk.Payload) || wire.Len() != 0 {
				t.Fatalf("v%d: wrote %+v, read %+v, %d bytes left", version, pk, got, wire.Len())
			}
		}
	}
}

func TestWritePacketRefusesUnknownTypes(t *testing.T) {
	var wire bytes.Buffer
	if err := WritePacket(&wire, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}); err == nil || wire.Len() != 0 {
		t.Fatalf("WritePacket of a type it has no encoder for: %v, %d bytes written", err, wire.Len())
	}
}

func TestReadPacketStopsAtATruncatedPacket(t *testing.T) {
	var wire bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 4, TopicName: "a", Payload: []byte("payload")}
	if err := WritePacket(&wire, &pk); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPacket(bufio.NewReader(bytes.NewReader(wire.Bytes()[:wire.Len()-2])), 4); err == nil {
		t.Fatal("a packet cut short read without error")
	}
}
