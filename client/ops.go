package client

import (
	"context"
	"fmt"

	"github.com/eclipse/paho.golang/paho"
)

// Publish sends p, waiting (until ctx ends) for a connection if none is up. A broker refusal (PUBACK or
// PUBREC 0x80 and above, e.g. 0x87 when the ACL denies the topic) is a *ReasonError.
func (c *Client) Publish(ctx context.Context, p *paho.Publish) error {
	if err := c.cm.AwaitConnection(ctx); err != nil {
		return fmt.Errorf("client: publish %q: %w", p.Topic, err)
	}
	pr, err := c.cm.Publish(ctx, p)
	if pr != nil && pr.ReasonCode >= 0x80 {
		refused := &ReasonError{Packet: "PUBACK", Code: pr.ReasonCode}
		if p.QoS == 2 {
			refused.Packet = "PUBREC"
		}
		if pr.Properties != nil {
			refused.Reason = pr.Properties.ReasonString
		}
		return refused
	}
	if err != nil {
		return fmt.Errorf("client: publish %q: %w", p.Topic, err)
	}
	return nil
}

// Subscribe subscribes to one topic filter; messages go to Config.Router. The client remembers it and
// subscribes again after a reconnect that finds no session on the broker.
func (c *Client) Subscribe(ctx context.Context, filter string, qos byte) error {
	if err := c.cm.AwaitConnection(ctx); err != nil {
		return fmt.Errorf("client: subscribe %q: %w", filter, err)
	}
	sa, err := c.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa != nil && len(sa.Reasons) == 1 && sa.Reasons[0] >= 0x80 {
		refused := &ReasonError{Packet: "SUBACK", Code: sa.Reasons[0]}
		if sa.Properties != nil {
			refused.Reason = sa.Properties.ReasonString
		}
		return refused
	}
	if err != nil {
		return fmt.Errorf("client: subscribe %q: %w", filter, err)
	}
	c.mu.Lock()
	c.subs[filter] = qos
	c.mu.Unlock()
	return nil
}

// Unsubscribe ends a subscription and forgets it.
func (c *Client) Unsubscribe(ctx context.Context, filter string) error {
	c.mu.Lock()
	delete(c.subs, filter) // forgotten first: a reconnect meanwhile must not bring it back
	c.mu.Unlock()
	if err := c.cm.AwaitConnection(ctx); err != nil {
		return fmt.Errorf("client: unsubscribe %q: %w", filter, err)
	}
	ua, err := c.cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}})
	if ua != nil && len(ua.Reasons) == 1 && ua.Reasons[0] >= 0x80 {
		refused := &ReasonError{Packet: "UNSUBACK", Code: ua.Reasons[0]}
		if ua.Properties != nil {
			refused.Reason = ua.Properties.ReasonString
		}
		return refused
	}
	if err != nil {
		return fmt.Errorf("client: unsubscribe %q: %w", filter, err)
	}
	return nil
}

// Disconnect sends DISCONNECT 0x00 (the broker discards the Will) and stops reconnecting and refreshing. The
// session stays on the broker for Config.SessionExpiry.
func (c *Client) Disconnect(ctx context.Context) error {
	defer c.stop()
	if err := c.cm.Disconnect(ctx); err != nil {
		return fmt.Errorf("client: disconnect: %w", err)
	}
	return nil
}
