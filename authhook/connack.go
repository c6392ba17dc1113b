package authhook

import (
	"context"
	"errors"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/refusal"
)

// refuseConnect refuses a CONNECT that failed authentication with err: counted, logged, and answered with
// its own CONNACK [MQTT-3.2.2-7], all as refusal.Table says for the error's Reason. The returned error is
// what OnConnect gives mochi, which then closes the connection.
func (h *Hook) refuseConnect(cl *mqtt.Client, err error) error {
	kind := ReasonOf(err)
	provider := ""
	var e *Error
	if errors.As(err, &e) {
		provider = e.Provider
	}
	h.metrics.observe(provider, kind)
	h.log.Log(context.Background(), refusal.Lookup(kind).Level, "authhook: connection refused",
		"provider", provider, "reason", string(kind), "remote", cl.Net.Remote, "client", cl.ID, "error", err.Error())
	code := connackCode(err, cl.Properties.ProtocolVersion)
	h.notify(AuthEvent{Kind: AuthRefused, Client: cl, Provider: provider, Reason: kind, Code: code})
	if h.server != nil {
		_ = h.server.SendConnack(cl, code, false, nil)
	}
	return refusal.Err(kind)
}

// connackCode is the CONNACK for a CONNECT refused with err. An error with no Reason (none is expected) is
// answered as a credential that does not verify. Every authhook refusal has a CONNACK on both protocol
// versions, so refusal.Connack's send is always true here.
func connackCode(err error, protocolVersion byte) packets.Code {
	code, _ := refusal.Connack(ReasonOf(err), protocolVersion)
	return code
}
