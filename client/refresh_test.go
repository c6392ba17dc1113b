package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRefreshInPlace runs the refresh loop on an injected clock against a real broker: the client waits
// exactly until exp - RefreshBefore, retries a failing token source after its backoff, has the broker accept
// the new token over AUTH on the same connection, and, when the broker refuses a token (DISCONNECT 0x87),
// reports ErrAuth and reconnects with the next one. No sleeps: every wait goes through the fake clock.
func TestRefreshInPlace(t *testing.T) {
	key, stranger := newKey(t), newKey(t)
	addr := startBroker(t, key)
	t0 := time.Now()
	var calls atomic.Int32
	minted := make(chan string, 10)
	source := func(ctx context.Context) (string, error) {
		signer := key.Signer
		switch calls.Add(1) {
		case 2:
			return "", errors.New("hsm busy")
		case 4:
			signer = stranger.Signer // a key the registry does not hold: the broker must refuse it in place
		}
		tok, err := DeviceToken(signer, testProject, "", time.Hour)(ctx)
		minted <- tok
		return tok, err
	}
	waits, fire := make(chan time.Duration, 10), make(chan time.Time)
	refreshed, errs, lost, ups := make(chan time.Time, 10), make(chan error, 10), make(chan error, 10), make(chan *paho.Connack, 10)
	cfg := Config{
		Brokers: []string{"tcp://" + addr}, ClientID: "dev-1", Token: source,
		RefreshBefore: 10 * time.Minute, BackoffMin: 50 * time.Millisecond,
		OnTokenRefreshed: func(exp time.Time) { refreshed <- exp },
		OnError:          func(err error) { errs <- err },
		OnConnectionLost: func(err error) { lost <- err },
		OnConnect:        func(ack *paho.Connack) { ups <- ack },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := connect(ctx, cfg, func(c *Client) {
		c.now = func() time.Time { return t0 }
		c.after = func(d time.Duration) <-chan time.Time { waits <- d; return fire }
		c.backoff.intN = func(n int64) int64 { return n - 1 } // the top of each window
	})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer func() { _ = c.Disconnect(context.Background()) }()
	<-ups

	expect := func(what string, ch <-chan time.Duration, want time.Duration) {
		t.Helper()
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("%s: waits %s, want %s", what, got, want)
			}
		case <-ctx.Done():
			t.Fatalf("%s: the client never waited", what)
		}
	}
	untilRefresh := func(token string) time.Duration {
		exp, err := tokenExpiry(token)
		if err != nil {
			t.Fatal(err)
		}
		return exp.Add(-cfg.RefreshBefore).Sub(t0)
	}

	expect("first token", waits, untilRefresh(<-minted))
	fire <- t0 // due: the source fails
	if err := <-errs; !errors.As(err, new(*TokenError)) || err.Error() != "client: token source: hsm busy" {
		t.Fatalf("OnError: %v, want the *TokenError", err)
	}
	expect("retry after the source failed", waits, cfg.BackoffMin)
	fire <- t0 // the retry succeeds
	second := <-minted
	if exp, _ := tokenExpiry(second); !(<-refreshed).Equal(exp) {
		t.Fatal("OnTokenRefreshed was not given the new token's exp")
	}
	expect("second token", waits, untilRefresh(second))
	if err := c.Publish(ctx, &paho.Publish{Topic: "/devices/dev-1/state", QoS: 1, Payload: []byte("ok")}); err != nil {
		t.Fatalf("publish after the refresh: %v", err)
	}
	if len(lost) != 0 || len(ups) != 0 {
		t.Fatalf("the refresh cost the connection: lost %v", firstErr(lost))
	}

	fire <- t0 // the next token does not verify
	<-minted
	select {
	case err := <-lost:
		var refused *ReasonError
		if !errors.Is(err, ErrAuth) || !errors.As(err, &refused) || refused.Code != 0x87 {
			t.Fatalf("OnConnectionLost: %v, want ErrAuth with DISCONNECT 0x87", err)
		}
	case <-ctx.Done():
		t.Fatal("a refused re-authentication did not end the connection")
	}
	select {
	case <-ups: // reconnected with the next (valid) token
	case <-ctx.Done():
		t.Fatal("no reconnect after the refused re-authentication")
	}
	expect("reconnected token", waits, untilRefresh(<-minted))
}

func firstErr(ch chan error) error {
	select {
	case err := <-ch:
		return err
	default:
		return nil
	}
}
