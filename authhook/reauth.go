package authhook

import (
	"context"
	"fmt"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/refusal"
)

// OnAuthPacket handles MQTT 5 re-authentication [MQTT-4.12.1]: AUTH 0x19 with the Authentication Method used
// at CONNECT and a new token in Authentication Data. On success the identity (attributes, grants, expiry) is
// replaced, the expiry deadline moved, Options.OnIdentityChange called, and AUTH 0x00 written back here:
// mochi discards the packet this hook returns. On failure the client is disconnected with the DISCONNECT of
// refusal.Table (0x87 for a credential that does not verify or names another user, 0x82 for a method other
// than the connection's) and nothing about its session changes first.
//
// It never returns an error: mochi would log the packet, token included, and disconnect the client itself.
func (h *Hook) OnAuthPacket(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	token := pk.Properties.AuthenticationData
	pk.Properties.AuthenticationData = nil // as at CONNECT: the token is never kept

	s := h.session(cl)
	if s == nil {
		h.reauthRefused(cl, &Identity{}, refuse(refusal.NotAuthenticated, "AUTH from a client with no identity"))
		return pk, nil
	}
	cur := s.id.Load()
	if cl.Properties.ProtocolVersion < 5 { // AUTH does not exist in 3.1.1
		h.reauthRefused(cl, cur, refuse(refusal.AuthProtocolError, "AUTH packet on an MQTT 3.1.1 connection"))
		return pk, nil
	}
	if pk.ReasonCode != packets.CodeReAuthenticate.Code {
		// idmq never asks to continue an exchange, so a client has no reason to send 0x00 or 0x18.
		h.reauthRefused(cl, cur, refuse(refusal.AuthProtocolError, "AUTH reason 0x%02X outside an authentication exchange", pk.ReasonCode))
		return pk, nil
	}
	method := pk.Properties.AuthenticationMethod
	if cur.AuthMethod == "" {
		h.reauthRefused(cl, cur, refuse(ReasonBadAuthMethod,
			"re-authentication needs an Authentication Method at CONNECT; this connection sent its token in the password field"))
		return pk, nil
	}
	if method != cur.AuthMethod { // [MQTT-4.12.1-1]
		h.reauthRefused(cl, cur, refuse(ReasonBadAuthMethod,
			"re-authentication method %q is not the connection's %q", clip(method), cur.AuthMethod))
		return pk, nil
	}
	if len(token) == 0 {
		h.reauthRefused(cl, cur, refuse(ReasonMissingCredential, "no token in Authentication Data"))
		return pk, nil
	}
	// A device token is checked against the device this connection's client id names: the same device.
	verified, err := h.verifyCredential(token, cl.ID)
	if err != nil {
		h.reauthRefused(cl, cur, err)
		return pk, nil
	}
	if verified.Provider != cur.Provider && (h.isDeviceProvider(verified.Provider) || h.isDeviceProvider(cur.Provider)) {
		// A device stays a device: a user's token must not take over a device's connection, nor the reverse.
		h.reauthRefused(cl, cur, &Error{Reason: ReasonIssuerMismatch, Provider: verified.Provider,
			Message: fmt.Sprintf("re-authentication token is from provider %q, the connection's is %q", verified.Provider, cur.Provider)})
		return pk, nil
	}
	if verified.Username != cur.Username {
		h.reauthRefused(cl, cur, &Error{Reason: ReasonUsernameMismatch, Provider: verified.Provider,
			Message: fmt.Sprintf("re-authentication token is for %q, the connection is %q", verified.Username, cur.Username)})
		return pk, nil
	}

	id := *verified
	id.ClientID = cl.ID
	id.AuthMethod = method
	id.ConnectedAt = cur.ConnectedAt
	s.mu.Lock()
	if s.ending { // disconnected meanwhile (expiry, revocation, administrator): too late to renew
		s.mu.Unlock()
		return pk, nil
	}
	s.id.Store(&id)
	h.armLocked(s, &id)
	s.mu.Unlock()
	// A Reload between the verification and the Store above judged the old identity: judge the new one.
	if reason := h.ps().admits(&id); reason != "" {
		_ = h.Disconnect(cl, packets.ErrNotAuthorized, reason)
		return pk, nil
	}
	if h.onIdentityChange != nil {
		h.onIdentityChange(cl)
	}
	h.notify(AuthEvent{Kind: TokenRefreshed, Client: cl, Identity: &id, Provider: id.Provider})
	_ = cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Auth},
		ReasonCode:  packets.CodeSuccess.Code,
		Properties:  packets.Properties{AuthenticationMethod: method}, // AUTH must carry the method (3.15.2.2.2)
	})
	if h.log.Enabled(context.Background(), slog.LevelDebug) {
		h.log.Debug("authhook: client re-authenticated", "provider", id.Provider, "username", id.Username, "client", cl.ID,
			"expires_at", id.ExpiresAt)
	}
	return pk, nil
}

// reauthRefused disconnects with the DISCONNECT refusal.Table gives err's Reason (an MQTT 3.1.1 connection is
// just closed) and logs it at the table's level.
func (h *Hook) reauthRefused(cl *mqtt.Client, cur *Identity, err error) {
	kind := ReasonOf(err)
	h.log.Log(context.Background(), refusal.Lookup(kind).Level, "authhook: re-authentication refused, client disconnected",
		"provider", cur.Provider, "username", cur.Username, "reason", string(kind), "client", cl.ID, "remote", cl.Net.Remote, "error", err.Error())
	code := refusal.Disconnect(kind)
	h.notify(AuthEvent{Kind: AuthRefused, Client: cl, Identity: cur, Provider: cur.Provider, Reason: kind, Code: code})
	_ = h.Disconnect(cl, code, "")
}
