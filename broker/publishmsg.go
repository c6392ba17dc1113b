package broker

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"
)

// publishMessage is one message of POST /v1/publish, as the client sends it.
type publishMessage struct {
	Topic         string             `json:"topic"`
	Payload       *string            `json:"payload"`
	PayloadBase64 *string            `json:"payload_base64"`
	QoS           int                `json:"qos"`
	Retain        bool               `json:"retain"`
	Properties    *publishProperties `json:"properties"`
}

// publishProperties are the MQTT 5 properties a publisher may set.
type publishProperties struct {
	ContentType           string         `json:"content_type"`
	ResponseTopic         string         `json:"response_topic"`
	CorrelationDataBase64 string         `json:"correlation_data_base64"`
	MessageExpiry         int64          `json:"message_expiry"` // seconds; 0: never expires
	UserProperties        userProperties `json:"user_properties"`
}

// userProperties accept {"k": "v", ...} (kept in the order written) or [{"key": "k", "value": "v"}, ...],
// which also allows a key twice, as MQTT does.
type userProperties []packets.UserProperty

func (u *userProperties) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if bytes.HasPrefix(data, []byte("[")) {
		var list []struct {
			Key   *string `json:"key"`
			Value *string `json:"value"`
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&list); err != nil {
			return err
		}
		for _, p := range list {
			if p.Key == nil || p.Value == nil {
				return errors.New(`each user property needs "key" and "value"`)
			}
			*u = append(*u, packets.UserProperty{Key: *p.Key, Val: *p.Value})
		}
		return nil
	}
	// An object: read its members in order (a Go map would lose it).
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("user_properties must be an object of strings or a list of {key, value}")
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return err
		}
		var v string
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("user property %q: the value must be a string", k)
		}
		*u = append(*u, packets.UserProperty{Key: k.(string), Val: v})
	}
	_, err := dec.Token()
	return err
}

// publishError is why one message is not published: an HTTP status and a stable code.
type publishError struct {
	status  int
	code    string
	message string
}

func (e *publishError) Error() string { return e.message }

func badRequest(code, format string, args ...any) *publishError {
	return &publishError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

// decodeMessage decodes one message strictly: unknown fields, trailing data and wrong types are errors.
func decodeMessage(raw []byte) (*publishMessage, *publishError) {
	var m publishMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, badRequest("invalid_json", "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest("invalid_json", "unexpected data after the message")
	}
	return &m, nil
}

// packet turns a decoded message into the PUBLISH mochi processes, checking what MQTT requires of it.
func (m *publishMessage) packet() (packets.Packet, *publishError) {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Retain: m.Retain},
		TopicName:       m.Topic,
		ProtocolVersion: 5,
	}
	if reason := topicNameProblem(m.Topic); reason != "" {
		return pk, badRequest("invalid_topic", "topic: %s", reason)
	}
	if m.QoS < 0 || m.QoS > 2 {
		return pk, badRequest("invalid_qos", "qos must be 0, 1 or 2")
	}
	pk.FixedHeader.Qos = byte(m.QoS)
	if m.QoS > 0 {
		pk.PacketID = 1 // for mochi's validity checks: an inline publish is never acknowledged
	}
	switch {
	case m.Payload != nil && m.PayloadBase64 != nil:
		return pk, badRequest("invalid_payload", "give payload or payload_base64, not both")
	case m.Payload != nil:
		pk.Payload = []byte(*m.Payload)
	case m.PayloadBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*m.PayloadBase64)
		if err != nil {
			return pk, badRequest("invalid_payload", "payload_base64 is not standard base64: %v", err)
		}
		pk.Payload = b
	}
	if m.Properties != nil {
		if perr := m.Properties.apply(&pk.Properties); perr != nil {
			return pk, perr
		}
	}
	return pk, nil
}

func (p *publishProperties) apply(out *packets.Properties) *publishError {
	bad := func(format string, args ...any) *publishError {
		return badRequest("invalid_properties", format, args...)
	}
	if strings.ContainsRune(p.ContentType, 0) {
		return bad("content_type must not contain U+0000") // [MQTT-1.5.4-2]
	}
	out.ContentType = p.ContentType
	if p.ResponseTopic != "" {
		if reason := topicNameProblem(p.ResponseTopic); reason != "" {
			return bad("response_topic: %s", reason) // [MQTT-3.3.2-14]
		}
		out.ResponseTopic = p.ResponseTopic
	}
	if p.CorrelationDataBase64 != "" {
		b, err := base64.StdEncoding.DecodeString(p.CorrelationDataBase64)
		if err != nil {
			return bad("correlation_data_base64 is not standard base64: %v", err)
		}
		out.CorrelationData = b
	}
	if p.MessageExpiry < 0 || p.MessageExpiry > 1<<32-1 {
		return bad("message_expiry must be between 0 and 4294967295 seconds")
	}
	out.MessageExpiryInterval = uint32(p.MessageExpiry)
	for _, up := range p.UserProperties {
		if strings.ContainsRune(up.Key, 0) || strings.ContainsRune(up.Val, 0) {
			return bad("user_properties must not contain U+0000")
		}
	}
	out.User = p.UserProperties
	return nil
}

// topicNameProblem says why s cannot be the topic of a PUBLISH, or "" if it can. JSON strings are valid
// UTF-8 once decoded; what MQTT adds is checked here.
func topicNameProblem(s string) string {
	switch {
	case s == "":
		return "required, and must not be empty" // [MQTT-4.7.3-1]
	case len(s) > 65535:
		return "longer than 65535 bytes" // [MQTT-4.7.3-3]
	case strings.ContainsAny(s, "+#"):
		return "must not contain the wildcards + or #" // [MQTT-3.3.2-2]
	case strings.ContainsRune(s, 0):
		return "must not contain U+0000" // [MQTT-4.7.3-2]
	}
	return ""
}

// encodedSize is the size of pk as an MQTT 5 PUBLISH on the wire: what mqtt.max_packet_size bounds.
func encodedSize(pk packets.Packet) int {
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		return int(^uint(0) >> 1)
	}
	return buf.Len()
}
