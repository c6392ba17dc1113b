// Package wire writes and reads raw MQTT packets with mochi's codec, for tests that play a client byte by byte.
// It is the part of the test kit that imports nothing of idmq, so mochifix's own tests can use it.
package wire

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/mochi-mqtt/server/v2/packets"
)

// encoders are mochi's encoders for the packets a raw test client sends.
var encoders = map[byte]func(*packets.Packet, *bytes.Buffer) error{
	packets.Connect:   (*packets.Packet).ConnectEncode,
	packets.Subscribe: (*packets.Packet).SubscribeEncode,
	packets.Publish:   (*packets.Packet).PublishEncode,
	packets.Puback:    (*packets.Packet).PubackEncode,
	packets.Pubrec:    (*packets.Packet).PubrecEncode,
	packets.Pubrel:    (*packets.Packet).PubrelEncode,
	packets.Pubcomp:   (*packets.Packet).PubcompEncode,
}

// decoders are mochi's decoders for the packets a broker sends a client.
var decoders = map[byte]func(*packets.Packet, []byte) error{
	packets.Connack:    (*packets.Packet).ConnackDecode,
	packets.Suback:     (*packets.Packet).SubackDecode,
	packets.Publish:    (*packets.Packet).PublishDecode,
	packets.Puback:     (*packets.Packet).PubackDecode,
	packets.Pubrec:     (*packets.Packet).PubrecDecode,
	packets.Pubrel:     (*packets.Packet).PubrelDecode,
	packets.Pubcomp:    (*packets.Packet).PubcompDecode,
	packets.Disconnect: (*packets.Packet).DisconnectDecode,
}

// WritePacket encodes pk with mochi's codec and writes it in one write, as a raw test client does. A type
// it has no encoder for is an error, never a silent no-op.
func WritePacket(w io.Writer, pk *packets.Packet) error {
	encode, ok := encoders[pk.FixedHeader.Type]
	if !ok {
		return fmt.Errorf("wire: no encoder for packet type %d", pk.FixedHeader.Type)
	}
	var buf bytes.Buffer
	if err := encode(pk, &buf); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// ReadPacket reads one packet a broker sends (CONNACK, SUBACK, PUBLISH, the QoS acknowledgements,
// DISCONNECT) and decodes it with mochi's codec for protocol version (4 for 3.1.1, 5). Any other type
// comes back with its fixed header only.
func ReadPacket(r *bufio.Reader, version byte) (packets.Packet, error) {
	pk := packets.Packet{ProtocolVersion: version}
	hb, err := r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return pk, err
	}
	if decode, ok := decoders[pk.FixedHeader.Type]; ok {
		err = decode(&pk, body)
	}
	return pk, err
}
