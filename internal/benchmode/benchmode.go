// Package benchmode holds the options broker.New takes for measurement only. It is internal so that only
// code in this module (cmd/idmq-bench) can pass them: the public broker API has no way to turn
// authentication off.
package benchmode

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
)

// Option changes how broker.New assembles the broker for a benchmark.
type Option func(*Settings)

// Settings is what the options set.
type Settings struct {
	// BaselineAuth, when set, replaces authentication and the ACL.
	BaselineAuth mqtt.Hook
}

// Apply returns the settings opts make.
func Apply(opts []Option) Settings {
	var s Settings
	for _, opt := range opts {
		opt(&s)
	}
	return s
}

// AllowAll replaces authentication and the ACL with mochi's allow-all hook, so a benchmark can measure
// what idmq's auth and ACL cost on otherwise identical code. Never for serving.
func AllowAll() Option { return BaselineAuth(new(auth.AllowHook)) }

// BaselineAuth replaces authentication and the ACL with hook, a benchmark's baseline (e.g. allow-all plus
// one bare signature check per CONNECT). Never for serving.
func BaselineAuth(hook mqtt.Hook) Option {
	return func(s *Settings) { s.BaselineAuth = hook }
}
