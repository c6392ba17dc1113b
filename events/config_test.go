package events

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/fielderr"
)

const secret16 = "0123456789abcdef"

func TestConfigDefaults(t *testing.T) {
	c := Config{Webhooks: []WebhookConfig{{URL: "https://app.example.com/hooks?token=abc", Secret: secret16}}}
	c.SetDefaults()
	w := c.Webhooks[0]
	if w.Timeout != DefaultTimeout || w.RetryFor != DefaultRetryFor || w.MaxQueue != DefaultMaxQueue {
		t.Fatalf("defaults: %+v", w)
	}
	if w.Name != "https://app.example.com/hooks" {
		t.Fatalf("default name %q: want the URL without its query", w.Name)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := WebhookConfig{URL: "https://a.example/x", Secret: secret16}
	tests := []struct {
		name string
		edit func(w *WebhookConfig)
		path string
		want string
	}{
		{"no url", func(w *WebhookConfig) { w.URL = "" }, "webhooks[0].url", "required"},
		{"not a url", func(w *WebhookConfig) { w.URL = "ftp://x/y" }, "webhooks[0].url", "not an http(s) URL"},
		{"plain http", func(w *WebhookConfig) { w.URL = "http://a.example/x" }, "webhooks[0].url", "insecure_http"},
		{"credentials in url", func(w *WebhookConfig) { w.URL = "https://u:p@a.example/x" }, "webhooks[0].url", "credentials"},
		{"short secret", func(w *WebhookConfig) { w.Secret = "short" }, "webhooks[0].secret", "at least 16"},
		{"unknown type", func(w *WebhookConfig) { w.Events = []Type{ClientConnected, "client.connect"} }, "webhooks[0].events[1]", "not one of"},
		{"type twice", func(w *WebhookConfig) { w.Events = []Type{AuthFailed, AuthFailed} }, "webhooks[0].events[1]", "twice"},
		{"timeout", func(w *WebhookConfig) { w.Timeout = 2 * time.Minute }, "webhooks[0].timeout", "between"},
		{"retry_for", func(w *WebhookConfig) { w.RetryFor = time.Millisecond }, "webhooks[0].retry_for", "between"},
		{"max_queue", func(w *WebhookConfig) { w.MaxQueue = -1 }, "webhooks[0].max_queue", "between"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := ok
			tt.edit(&w)
			c := Config{Webhooks: []WebhookConfig{w}}
			c.SetDefaults()
			err := c.Validate()
			var fe *fielderr.FieldError
			if !errors.As(err, &fe) || fe.Path != tt.path || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want %s: …%s…", err, tt.path, tt.want)
			}
			if strings.Contains(err.Error(), secret16) {
				t.Fatal("the error shows the secret")
			}
		})
	}
	t.Run("http allowed by name", func(t *testing.T) {
		c := Config{Webhooks: []WebhookConfig{{URL: "http://127.0.0.1:9/x", Secret: secret16, InsecureHTTP: true}}}
		c.SetDefaults()
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("same name twice", func(t *testing.T) {
		c := Config{Webhooks: []WebhookConfig{ok, ok}}
		c.SetDefaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "webhooks[1].name") {
			t.Fatalf("Validate = %v, want a duplicate name at webhooks[1].name", err)
		}
	})
}
