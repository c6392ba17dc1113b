package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Defaults for the zero values of Config.
const (
	DefaultRefreshBefore  = time.Minute
	DefaultBackoffMin     = time.Second
	DefaultBackoffMax     = 2 * time.Minute
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
)

// Config is everything Connect needs. ClientID, Brokers and Token are required; every other zero value means
// the default named beside it.
type Config struct {
	// Brokers are tried in order at every attempt: tcp://host:1883, tls://host:8883, ws://host/mqtt,
	// wss://host/mqtt.
	Brokers  []string
	ClientID string // a device's id (or its projects/…/devices/{id} path)
	Username string // optional: idmq takes the identity from the token

	// Token is called at every connection attempt and before every refresh; DeviceToken mints one from a
	// device key. The token goes in the CONNECT's Authentication Data (method JWT), which is what lets the
	// broker accept a new one over AUTH without dropping the connection.
	Token TokenSource
	// RefreshBefore is how long before the token's exp the client re-authenticates (default 1m); a token
	// living less than twice that is refreshed halfway through its life.
	RefreshBefore time.Duration

	CleanStart    bool          // on the first connection only; reconnects always resume the session
	SessionExpiry time.Duration // how long the broker keeps the session after a disconnect (0: it ends with it)
	KeepAlive     time.Duration // default 30s

	// BackoffMin and BackoffMax bound the reconnect delay: before retry n it is uniform in
	// [0, min(BackoffMax, BackoffMin*2^n)] (defaults 1s and 2m). The first connection attempt is immediate.
	BackoffMin, BackoffMax time.Duration
	ConnectTimeout         time.Duration // per attempt, token source included (default 10s)
	TLS                    *tls.Config   // for tls:// and wss:// (nil: system roots)

	// Callbacks run on the client's goroutines and must not block. None receives a token.
	OnConnect        func(*paho.Connack)       // every connection, the first included
	OnConnectionLost func(error)               // a *ReasonError for a DISCONNECT, else the network error
	OnTokenRefreshed func(expiresAt time.Time) // after the broker accepted a new token in place
	OnError          func(error)               // failed attempts and refreshes the client retries by itself
	Router           paho.Router               // receives every PUBLISH (paho.NewStandardRouter dispatches by filter)
	Logger           *slog.Logger              // nil: silent
}

// withDefaults validates c and fills its zero values; errors name the field.
func (c Config) withDefaults() (Config, []*url.URL, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("client: Config.%s: "+format, append([]any{field}, args...)...))
	}
	var urls []*url.URL
	if len(c.Brokers) == 0 {
		bad("Brokers", "no broker URL")
	}
	for i, b := range c.Brokers {
		u, err := url.Parse(b)
		switch {
		case err != nil:
			bad(fmt.Sprintf("Brokers[%d]", i), "%v", err)
		case !slices.Contains([]string{"tcp", "tls", "ws", "wss"}, u.Scheme) || u.Host == "":
			bad(fmt.Sprintf("Brokers[%d]", i), "%q: want tcp://, tls://, ws:// or wss:// and a host", b)
		default:
			urls = append(urls, u)
		}
	}
	if c.ClientID == "" {
		bad("ClientID", "empty")
	}
	if c.Token == nil {
		bad("Token", "no token source")
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{
		{"RefreshBefore", &c.RefreshBefore, DefaultRefreshBefore},
		{"BackoffMin", &c.BackoffMin, DefaultBackoffMin},
		{"BackoffMax", &c.BackoffMax, DefaultBackoffMax},
		{"KeepAlive", &c.KeepAlive, DefaultKeepAlive},
		{"ConnectTimeout", &c.ConnectTimeout, DefaultConnectTimeout},
	} {
		if *d.v < 0 {
			bad(d.field, "negative (%s)", *d.v)
		} else if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.BackoffMin > c.BackoffMax {
		bad("BackoffMin", "%s is more than BackoffMax %s", c.BackoffMin, c.BackoffMax)
	}
	if c.KeepAlive > math.MaxUint16*time.Second {
		bad("KeepAlive", "%s is more than MQTT allows (65535s)", c.KeepAlive)
	}
	if c.SessionExpiry < 0 || c.SessionExpiry > math.MaxUint32*time.Second {
		bad("SessionExpiry", "%s is outside 0..%ds", c.SessionExpiry, uint32(math.MaxUint32))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, urls, errors.Join(errs...)
}
