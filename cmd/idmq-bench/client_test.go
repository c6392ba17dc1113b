package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// decodeWithMochi parses CONNECT bytes the way mochi's server does.
func decodeWithMochi(t *testing.T, wire []byte, version byte) packets.Packet {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(wire))
	hb, err := r.ReadByte()
	if err != nil {
		t.Fatal(err)
	}
	pk := packets.Packet{ProtocolVersion: version}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := r.Read(body); err != nil && n > 0 {
		t.Fatal(err)
	}
	if err := pk.ConnectDecode(body); err != nil {
		t.Fatalf("mochi cannot decode our CONNECT: %v", err)
	}
	if code := pk.ConnectValidate(); code != packets.CodeSuccess {
		t.Fatalf("mochi rejects our CONNECT: %v", code)
	}
	return pk
}

func TestConnectPacketDecodesInMochi(t *testing.T) {
	cred := credential{username: "bench-7", secret: "eyJhbGciOiJSUzI1NiJ9.e30.sig"}
	tests := []struct {
		name                     string
		opts                     connectOptions
		wantUser, wantPass       string
		wantMethod, wantAuthData string
	}{
		{name: "v3 username and password", opts: connectOptions{version: 4, clientID: "c1", cred: cred, sendCred: true, keepalive: 30},
			wantUser: "bench-7", wantPass: cred.secret},
		{name: "v5 username and password", opts: connectOptions{version: 5, clientID: "c2", cred: cred, sendCred: true, keepalive: 30},
			wantUser: "bench-7", wantPass: cred.secret},
		{name: "v5 authentication method and data", opts: connectOptions{version: 5, clientID: "c3", cred: cred, sendCred: true, authMethod: "jwt", keepalive: 30},
			wantUser: "bench-7", wantMethod: "jwt", wantAuthData: cred.secret},
		{name: "v5 without credentials", opts: connectOptions{version: 5, clientID: "c4", cred: cred, keepalive: 30}},
		{name: "v3 without credentials", opts: connectOptions{version: 4, clientID: "c5", cred: cred}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk := connectPacket(tt.opts)
			var wire bytes.Buffer
			if err := pk.ConnectEncode(&wire); err != nil {
				t.Fatal(err)
			}
			got := decodeWithMochi(t, wire.Bytes(), tt.opts.version)
			if got.ProtocolVersion != tt.opts.version || string(got.Connect.ProtocolName) != "MQTT" {
				t.Errorf("protocol = %q v%d, want MQTT v%d", got.Connect.ProtocolName, got.ProtocolVersion, tt.opts.version)
			}
			if got.Connect.ClientIdentifier != tt.opts.clientID || !got.Connect.Clean || got.Connect.Keepalive != tt.opts.keepalive {
				t.Errorf("client id %q clean %v keepalive %d", got.Connect.ClientIdentifier, got.Connect.Clean, got.Connect.Keepalive)
			}
			if string(got.Connect.Username) != tt.wantUser || got.Connect.UsernameFlag != (tt.wantUser != "") {
				t.Errorf("username = %q (flag %v), want %q", got.Connect.Username, got.Connect.UsernameFlag, tt.wantUser)
			}
			if string(got.Connect.Password) != tt.wantPass || got.Connect.PasswordFlag != (tt.wantPass != "") {
				t.Errorf("password = %q (flag %v), want %q", got.Connect.Password, got.Connect.PasswordFlag, tt.wantPass)
			}
			if got.Properties.AuthenticationMethod != tt.wantMethod || string(got.Properties.AuthenticationData) != tt.wantAuthData {
				t.Errorf("authentication = %q/%q, want %q/%q", got.Properties.AuthenticationMethod, got.Properties.AuthenticationData, tt.wantMethod, tt.wantAuthData)
			}
		})
	}
}

// credHook admits exactly one credential, given as password or as MQTT 5 Authentication Data.
type credHook struct {
	mqtt.HookBase
	user, secret, method string
}

func (h *credHook) ID() string { return "cred-check" }

func (h *credHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *credHook) OnConnectAuthenticate(_ *mqtt.Client, pk packets.Packet) bool {
	if string(pk.Connect.Username) != h.user {
		return false
	}
	if pk.Properties.AuthenticationMethod != "" {
		return pk.Properties.AuthenticationMethod == h.method && string(pk.Properties.AuthenticationData) == h.secret
	}
	return string(pk.Connect.Password) == h.secret
}

func (h *credHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func TestDialClientAgainstMochi(t *testing.T) {
	b := startBroker(t, &credHook{user: "alice", secret: "s3cret", method: "jwt"})
	d, err := newDialer(&config{Transport: "tcp", Addr: b.tcp})
	if err != nil {
		t.Fatal(err)
	}
	good := credential{username: "alice", secret: "s3cret"}
	bad := credential{username: "alice", secret: "wrong"}
	tests := []struct {
		name       string
		version    byte
		cred       credential
		authMethod string
		wantErr    string // the failure key results would show; "" for success
	}{
		{name: "v3 good password", version: 4, cred: good},
		{name: "v3 bad password", version: 4, cred: bad, wantErr: "connack 0x05 not authorized"},
		{name: "v5 good password", version: 5, cred: good},
		{name: "v5 bad password", version: 5, cred: bad, wantErr: "connack 0x86 bad user name or password"},
		{name: "v5 good authentication data", version: 5, cred: good, authMethod: "jwt"},
		{name: "v5 bad authentication method", version: 5, cred: good, authMethod: "other", wantErr: "connack 0x86 bad user name or password"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := connectOptions{version: tt.version, clientID: "t" + strings.Repeat("x", i), cred: tt.cred, sendCred: true,
				authMethod: tt.authMethod, keepalive: 30, timeout: 5 * time.Second}
			c, lat, err := dialClient(context.Background(), d, o)
			if tt.wantErr != "" {
				var ce *connackError
				if !errors.As(err, &ce) || failureReason(err) != tt.wantErr {
					t.Fatalf("err = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.disconnect()
			if lat <= 0 {
				t.Errorf("connack latency %v, want > 0", lat)
			}
			if tt.version == 5 && c.receiveMax != 1024 {
				t.Errorf("receive maximum %d, want mochi's 1024 from CONNACK", c.receiveMax)
			}
		})
	}
}

func TestClientRoundTripsThroughMochi(t *testing.T) {
	b := startBroker(t, nil)
	for _, tr := range []string{"tcp", "ws"} {
		for _, version := range []byte{4, 5} {
			t.Run(tr+" v"+string('0'+version), func(t *testing.T) {
				addr := b.tcp
				if tr == "ws" {
					addr = b.ws
				}
				d, err := newDialer(&config{Transport: tr, Addr: addr, WSPath: "/mqtt"})
				if err != nil {
					t.Fatal(err)
				}
				o := connectOptions{version: version, keepalive: 30, timeout: 5 * time.Second}
				o.clientID = "sub-" + tr + string('0'+version)
				sub, _, err := dialClient(context.Background(), d, o)
				if err != nil {
					t.Fatal(err)
				}
				got := make(chan string, 4)
				sub.onMessage = func(p []byte) { got <- string(p) }
				sub.start()
				defer sub.disconnect()
				topic := "rt/" + o.clientID
				if err := sub.subscribe(context.Background(), topic, 1, 5*time.Second); err != nil {
					t.Fatal(err)
				}
				o.clientID = "pub-" + tr + string('0'+version)
				pub, _, err := dialClient(context.Background(), d, o)
				if err != nil {
					t.Fatal(err)
				}
				acks := make(chan byte, 1)
				pub.onPuback = func(code byte) { acks <- code }
				pub.start()
				defer pub.disconnect()
				// Bigger than the read buffer so that reassembly across reads is exercised.
				payload := strings.Repeat("p", 3*readBufferSize)
				if err := pub.publish(topic, 1, []byte(payload)); err != nil {
					t.Fatal(err)
				}
				select {
				case code := <-acks:
					if code >= 0x80 {
						t.Fatalf("puback 0x%02x", code)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("no puback")
				}
				select {
				case p := <-got:
					if p != payload {
						t.Fatalf("payload of %d bytes, want %d", len(p), len(payload))
					}
				case <-time.After(5 * time.Second):
					t.Fatal("no delivery")
				}
				if err := sub.ping(); err != nil {
					t.Fatal(err)
				}
				if gone, err := sub.dropped(); gone {
					t.Fatalf("subscriber dropped: %v", err)
				}
			})
		}
	}
}
