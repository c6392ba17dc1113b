package authhook_test

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/idmq/idmq/aclhook"
	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/mochifix"
)

// Example_embedding mounts idmq's authentication and ACL hooks, with the fixes for mochi's defects, on a
// mochi server of your own. The ACL hook learns who a client is from the auth hook through Subject; the
// fixes go in through mochifix.Add, which adds the hooks in the one order that works.
func Example_embedding() {
	dataDir, _ := os.MkdirTemp("", "idmq-example")
	defer os.RemoveAll(dataDir)

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	server := mqtt.New(&mqtt.Options{Logger: quiet})
	auth, err := authhook.New(authhook.Options{
		Config:  authhook.Config{Providers: []authhook.ProviderConfig{{Name: "local", Type: "local"}}},
		Server:  server,
		DataDir: dataDir, // the local issuer's signing key is generated here
	})
	if err != nil {
		log.Fatal(err)
	}
	acl, err := aclhook.New(aclhook.Options{
		Config: aclhook.Config{Rules: []aclhook.Rule{{Topic: "users/%u/#", Access: aclhook.AccessPubSub}}},
		Server: server,
		Subject: func(cl *mqtt.Client) (aclhook.Subject, bool) {
			id, ok := auth.Identity(cl)
			if !ok {
				return aclhook.Subject{}, false
			}
			return aclhook.Subject{Username: id.Username, ClientID: cl.ID, Attributes: id.Attributes}, true
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	fixes, err := mochifix.Add(server, mochifix.Options{Hooks: []mqtt.Hook{auth, acl}, SlowSubscriberWait: time.Second})
	if err != nil {
		log.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	_ = server.AddListener(fixes.Listener(listeners.NewNet("tcp", ln), mochifix.ListenerOptions{ConnectTimeout: 5 * time.Second}))
	if err := server.Serve(); err != nil {
		log.Fatal(err)
	}
	if err := fixes.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = mochifix.CloseServer(server); _ = fixes.Close() }()

	// A client connects with a token in the password field (here minted by idmq's own issuer), and the ACL
	// decides what it may subscribe to: SUBACK 0x80 is MQTT 3.1.1's refusal.
	token, _ := auth.LocalIssuer().Mint("alice", time.Hour, nil, authhook.TopicGrants{})
	connect := func(password string) (paho.Client, error) {
		opts := paho.NewClientOptions().AddBroker("tcp://" + ln.Addr().String()).
			SetClientID("example").SetUsername("alice").SetPassword(password).SetAutoReconnect(false)
		c := paho.NewClient(opts)
		t := c.Connect()
		t.Wait()
		return c, t.Error()
	}
	_, err = connect("hunter2")
	fmt.Println("wrong password:", err)
	c, err := connect(token)
	fmt.Println("token:", err)
	for _, filter := range []string{"users/alice/#", "users/bob/#"} {
		t := c.Subscribe(filter, 1, nil)
		t.Wait()
		fmt.Printf("subscribe %s: %#x\n", filter, t.(*paho.SubscribeToken).Result()[filter])
	}
	c.Disconnect(100)
	// Output:
	// wrong password: bad user name or password
	// token: <nil>
	// subscribe users/alice/#: 0x1
	// subscribe users/bob/#: 0x80
}
