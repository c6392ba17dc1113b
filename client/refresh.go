package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// refreshLoop replaces the connection's token before it expires, for as long as the connection lasts: AUTH
// with reason 0x19 (Re-authenticate), method JWT, the new token as Authentication Data [MQTT-4.12.1]. idmq
// answers AUTH 0x00 and moves the connection's expiry; a refused token ends the connection with DISCONNECT
// (0x87, or 0x82 for a method it will not take), after which autopaho reconnects with a fresh token.
// A failing token source is retried with backoff; if it fails until the token expires, the broker ends the
// connection (DISCONNECT 0xA0) and the reconnect asks the source again.
func (c *Client) refreshLoop(ctx context.Context, cm *autopaho.ConnectionManager, cs *connState, life issued) {
	next := refreshAt(life.obtained, life.exp, c.cfg.RefreshBefore)
	for attempt := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-c.after(next.Sub(c.now())):
		}
		err := c.refresh(ctx, cm, cs, &life)
		switch {
		case err == nil:
			attempt = 0
			next = refreshAt(life.obtained, life.exp, c.cfg.RefreshBefore)
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrAuth):
			c.lost(cs, err) // the broker closes the connection after its DISCONNECT
			return
		default:
			c.log.Warn("client: token refresh failed; retrying", "error", err, "token_expires", life.exp)
			c.reportError(err)
			next = c.now().Add(c.backoff.delay(attempt))
			attempt++
		}
	}
}

// refresh obtains a token and has the broker accept it in place; on success life is the new token's.
func (c *Client) refresh(ctx context.Context, cm *autopaho.ConnectionManager, cs *connState, life *issued) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	token, fresh, err := c.fetch(ctx)
	if err != nil {
		return err
	}
	cs.reauth.Store(true)
	ar, err := cm.Authenticate(ctx, &paho.Auth{
		ReasonCode: 0x19,
		Properties: &paho.AuthProperties{AuthMethod: authMethod, AuthData: []byte(token)},
	})
	if err != nil {
		cs.reauth.Store(false)
		return fmt.Errorf("client: re-authentication: %w", err)
	}
	if !ar.Success {
		// Left marked: the DISCONNECT that carried this answer is also reported as the connection's loss.
		refused := &ReasonError{Packet: "DISCONNECT", Code: ar.ReasonCode, Reauth: true}
		if ar.Properties != nil {
			refused.Reason = ar.Properties.ReasonString
		}
		return refused
	}
	cs.reauth.Store(false)
	*life = fresh
	c.log.Info("client: token refreshed in place", "token_expires", fresh.exp)
	if c.cfg.OnTokenRefreshed != nil {
		c.cfg.OnTokenRefreshed(fresh.exp)
	}
	return nil
}

// resubscribe restores the subscriptions a reconnect without a session lost.
func (c *Client) resubscribe(ctx context.Context, cm *autopaho.ConnectionManager, subs []paho.SubscribeOptions) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	sa, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	if err == nil && sa != nil {
		for i, code := range sa.Reasons {
			if code >= 0x80 && i < len(subs) {
				err = errors.Join(err, fmt.Errorf("client: re-subscribe %q: %w", subs[i].Topic, &ReasonError{Packet: "SUBACK", Code: code}))
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		c.log.Warn("client: re-subscribing after reconnect failed", "error", err)
		c.reportError(err)
	}
}
