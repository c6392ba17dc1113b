package events

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/idmq/idmq/internal/fielderr"
)

// Config is the events section of idmq's YAML.
type Config struct {
	Webhooks []WebhookConfig `yaml:"webhooks"`
}

// WebhookConfig is one receiver.
type WebhookConfig struct {
	// Name labels the webhook's metrics and keys its persisted queue. Default: the URL without its query.
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// Secret keys the HMAC-SHA256 signature (write it as ${ENV}); at least 16 characters.
	Secret string `yaml:"secret"`
	// Events filters what is sent; empty: every type.
	Events []Type `yaml:"events"`
	// Timeout bounds one delivery attempt. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// RetryFor is how long an event is retried after it happened; then it is dropped and counted. Default 1h.
	RetryFor time.Duration `yaml:"retry_for"`
	// MaxQueue bounds the events waiting for this webhook; when full the oldest is dropped. Default 10000.
	MaxQueue int `yaml:"max_queue"`
	// InsecureHTTP allows an http:// URL: events and their signatures then cross the network in clear text.
	InsecureHTTP bool `yaml:"insecure_http"`
}

// Defaults.
const (
	DefaultTimeout  = 5 * time.Second
	DefaultRetryFor = time.Hour
	DefaultMaxQueue = 10000
	minSecretLength = 16
)

// SetDefaults fills what the YAML left out.
func (c *Config) SetDefaults() {
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		if w.Timeout == 0 {
			w.Timeout = DefaultTimeout
		}
		if w.RetryFor == 0 {
			w.RetryFor = DefaultRetryFor
		}
		if w.MaxQueue == 0 {
			w.MaxQueue = DefaultMaxQueue
		}
		if w.Name == "" {
			w.Name = defaultName(w.URL)
		}
	}
}

// defaultName is the URL without credentials, query or fragment: those may hold secrets, and the name ends
// up in metrics and logs.
func defaultName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host + u.Path
}

// Validate checks the section after SetDefaults. Each error is a *fielderr.FieldError with a path relative
// to the section ("webhooks[1].events[0]"); the broker's loader adds "events." and the line.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, fielderr.New(path, format, args...)) }
	names := map[string]int{}
	for i, w := range c.Webhooks {
		p := fmt.Sprintf("webhooks[%d]", i)
		u, err := url.Parse(w.URL)
		switch {
		case w.URL == "":
			add(p+".url", "is required")
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			add(p+".url", "%q is not an http(s) URL", w.URL)
		case u.Scheme == "http" && !w.InsecureHTTP:
			add(p+".url", "must be https (set insecure_http: true to send events in clear text)")
		case u.User != nil:
			add(p+".url", "must not carry credentials: the receiver checks the signature")
		}
		if len(w.Secret) < minSecretLength {
			add(p+".secret", "must be at least %d characters (use a random secret, e.g. from ${ENV})", minSecretLength)
		}
		for j, t := range w.Events {
			if !slices.Contains(Types, t) {
				add(fmt.Sprintf("%s.events[%d]", p, j), "%q is not one of %v", t, Types)
			} else if slices.Index(w.Events, t) != j {
				add(fmt.Sprintf("%s.events[%d]", p, j), "%q is listed twice", t)
			}
		}
		if w.Timeout < 100*time.Millisecond || w.Timeout > time.Minute {
			add(p+".timeout", "must be between 100ms and 1m")
		}
		if w.RetryFor < time.Second || w.RetryFor > 7*24*time.Hour {
			add(p+".retry_for", "must be between 1s and 168h")
		}
		if w.MaxQueue < 1 || w.MaxQueue > 1_000_000 {
			add(p+".max_queue", "must be between 1 and 1000000")
		}
		if first, dup := names[w.Name]; dup && w.Name != "" {
			add(p+".name", "%q is already the name of webhooks[%d] (name one of them)", w.Name, first)
		}
		names[w.Name] = i
	}
	return errors.Join(errs...)
}

// wants reports whether the webhook is sent events of type t.
func (w *WebhookConfig) wants(t Type) bool { return len(w.Events) == 0 || slices.Contains(w.Events, t) }
