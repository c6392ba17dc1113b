package broker

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/idmq/idmq/aclhook"
)

// PublishConfig is the http section's part for POST /v1/publish (publish.go). It is inlined into
// HTTPConfig: its keys sit directly under http.
type PublishConfig struct {
	// PublishKeys may publish over HTTP, each to the topics its filters match. http.admin_keys may publish
	// to every topic. With neither, POST /v1/publish answers 404.
	PublishKeys []PublishKeyConfig `yaml:"publish_keys"`
	// PublisherClientID is the client id the messages come from (what No Local and the cluster see).
	PublisherClientID string `yaml:"publisher_client_id"`
	// PublishRateLimit is a token bucket per key, counted in messages (a batch takes one per item).
	PublishRateLimit RateLimitConfig `yaml:"publish_rate_limit"`
}

// PublishKeyConfig is one key of http.publish_keys and the topic filters it may publish to.
type PublishKeyConfig struct {
	Key    string   `yaml:"key"`
	Topics []string `yaml:"topics"`
}

// defaultPublisherClientID starts with '$' so that no MQTT client is likely to pick it.
const defaultPublisherClientID = "$idmq-http"

func defaultPublishConfig() PublishConfig {
	return PublishConfig{
		PublisherClientID: defaultPublisherClientID,
		PublishRateLimit:  RateLimitConfig{PerSecond: 100, Burst: maxPublishBatch},
	}
}

// validate checks http.publish_keys, http.publisher_client_id and http.publish_rate_limit.
func (p *PublishConfig) validate(adminKeys []string) []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	keys := make([]string, len(p.PublishKeys))
	for i, k := range p.PublishKeys {
		keys[i] = k.Key
		path := fmt.Sprintf("http.publish_keys[%d]", i)
		if len(k.Topics) == 0 {
			add(fieldErr(path+".topics", "required: the topic filters this key may publish to"))
		}
		for j, f := range k.Topics {
			add(checkPublishFilter(fmt.Sprintf("%s.topics[%d]", path, j), f))
		}
	}
	if err := checkKeys("http.publish_keys", keys); err != nil {
		// checkKeys names the list item; the secret is its key field.
		var fe *FieldError
		if errors.As(err, &fe) {
			err = fieldErr(fe.Path+".key", "%v", fe.Err)
		}
		add(err)
	}
	admin := map[string]bool{}
	for _, k := range adminKeys {
		admin[k] = true
	}
	for i, k := range keys {
		if admin[k] {
			// One secret, two scopes: which one applies would be an accident of the lookup order.
			add(fieldErr(fmt.Sprintf("http.publish_keys[%d].key", i), "is also in http.admin_keys"))
		}
	}
	id := p.PublisherClientID
	if id == "" || len(id) > 65535 || !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		add(fieldErr("http.publisher_client_id", "must be a non-empty UTF-8 client id"))
	}
	if p.PublishRateLimit.PerSecond <= 0 || p.PublishRateLimit.Burst < 1 {
		add(fieldErr("http.publish_rate_limit", "per_second must be > 0 and burst >= 1"))
	}
	return errs
}

// checkPublishFilter refuses filters that are not MQTT filters and those naming '$' topics, which no key
// may publish to.
func checkPublishFilter(path, f string) error {
	if !mqtt.IsValidFilter(f, false) || strings.HasPrefix(strings.ToLower(f), "$share/") {
		return fieldErr(path, "%q is not a valid topic filter", f)
	}
	if strings.HasPrefix(f, "$") {
		return fieldErr(path, "%q: '$' topics cannot be published to over HTTP", f)
	}
	return nil
}

// publishAccess is who may call POST /v1/publish, built from the config in force (a reload replaces it).
type publishAccess struct {
	admin     keyring
	keys      keyring
	filters   [][]string // per publish key, in keys' order
	rate      RateLimitConfig
	publisher string
}

func newPublishAccess(h HTTPConfig) *publishAccess {
	a := &publishAccess{admin: newKeyring(h.AdminKeys), rate: h.PublishRateLimit, publisher: h.PublisherClientID}
	raw := make([]string, len(h.PublishKeys))
	for i, k := range h.PublishKeys {
		raw[i] = k.Key
		a.filters = append(a.filters, k.Topics)
	}
	a.keys = newKeyring(raw)
	return a
}

func (a *publishAccess) off() bool { return a.admin.empty() && a.keys.empty() }

// publishCaller is the key a request presented: its scope and the name its rate limit is kept under.
type publishCaller struct {
	admin   bool
	filters []string
	bucket  string // the key's digest: limits survive a reload that keeps the key, and never hold the secret
}

// identify finds the key among both lists in constant time: both lists are always compared in full.
func (a *publishAccess) identify(presented string) (publishCaller, bool) {
	adminIdx := a.admin.find(presented)
	keyIdx := a.keys.find(presented)
	switch {
	case adminIdx >= 0:
		return publishCaller{admin: true, bucket: bucketName(a.admin[adminIdx])}, true
	case keyIdx >= 0:
		return publishCaller{filters: a.filters[keyIdx], bucket: bucketName(a.keys[keyIdx])}, true
	}
	return publishCaller{}, false
}

func bucketName(d [sha256.Size]byte) string { return string(d[:8]) }

// allows reports whether the caller may publish to topic, with the ACL's own matcher. '$' topics are
// refused to every key, admin keys included: they are the broker's ($SYS) or reserved.
func (c publishCaller) allows(topic string) bool {
	if strings.HasPrefix(topic, "$") {
		return false
	}
	if c.admin {
		return true
	}
	for _, f := range c.filters {
		if aclhook.Covers(f, topic) {
			return true
		}
	}
	return false
}
