package client_test

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/client"
)

// A device that signs its own tokens, as Cloud IoT Core devices did, and stays connected for as long as it
// runs: each token lives an hour and is replaced in place a minute before it expires.
func Example() {
	key, err := authhook.ReadPrivateKey("device-private.pem")
	if err != nil {
		log.Fatal(err)
	}
	commands := paho.NewStandardRouter()
	commands.RegisterHandler("/devices/thermo-1/commands/#", func(p *paho.Publish) {
		log.Printf("command %s: %s", p.Topic, p.Payload)
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Connect(ctx, client.Config{
		Brokers:       []string{"tls://mqtt.example.com:8883"},
		ClientID:      "projects/my-project/locations/europe-west1/registries/thermostats/devices/thermo-1",
		Token:         client.DeviceToken(key, "my-project", "ES256", time.Hour),
		SessionExpiry: time.Hour, // queued commands wait for the device across an outage
		Router:        commands,
		OnError:       func(err error) { log.Printf("retrying: %v", err) },
		Logger:        slog.Default(),
	})
	if errors.Is(err, client.ErrAuth) {
		log.Fatalf("the broker does not accept this device's key: %v", err) // retrying will not help
	}
	if err != nil {
		log.Fatal(err) // unreachable broker until the deadline, or a token source failure
	}
	defer c.Disconnect(context.Background())

	if err := c.Subscribe(ctx, "/devices/thermo-1/commands/#", 1); err != nil {
		log.Fatal(err)
	}
	err = c.Publish(ctx, &paho.Publish{Topic: "/devices/thermo-1/events/temperature", QoS: 1, Payload: []byte("21.5")})
	if err != nil {
		log.Print(err)
	}
}

// Any token source works: here a service that gets its token from an exchange endpoint or a secret store.
func ExampleTokenSource() {
	var fetchToken client.TokenSource = func(ctx context.Context) (string, error) {
		return "", errors.New("fetch your token here (an IdP client-credentials grant, a vault, ...)")
	}
	_, err := client.Connect(context.Background(), client.Config{
		Brokers:  []string{"wss://mqtt.example.com:8084/mqtt"},
		ClientID: "billing-service",
		Token:    fetchToken,
	})
	var tokenErr *client.TokenError
	if errors.As(err, &tokenErr) {
		log.Printf("no token: %v", tokenErr.Err)
	}
}
