package authhook

import (
	"errors"
	"slices"

	"github.com/mochi-mqtt/server/v2/packets"
)

// ErrRefreshTooSoon: every key set of the provider was fetched less than auth.unknown_kid_cooldown ago.
var ErrRefreshTooSoon = errors.New("authhook: the provider's keys were fetched less than unknown_kid_cooldown ago")

// Reasons sent (MQTT 5 DISCONNECT 0x87 Not authorized) to a client a reload no longer admits.
const (
	reasonProviderRemoved = "provider removed"
	reasonNoLongerValid   = "credentials no longer valid"
)

// Reload puts cfg in force without dropping connections: providers added, removed or changed, leeway, the
// exchange settings, the devices registries. It validates cfg first; an invalid cfg changes nothing. A key
// set whose provider, issuer and fetch settings did not change is kept as it is (its keys stay in use).
// The token cache starts empty: cached identities were mapped under the old settings.
//
// Connected clients are judged again at once: a client whose provider is gone, or whose credential no longer
// passes its changed provider's issuer, algorithm, audience or authorized-party checks (for devices: the
// project, algorithms, a registered and unblocked device), is disconnected (MQTT 5: DISCONNECT 0x87 with the
// reason string "provider removed" or "credentials no longer valid"; 3.1.1: closed). Its persistent session
// stays. Attribute mappings and grants apply from the next CONNECT or re-authentication: a connected client's
// claims are not kept. It returns how many clients were disconnected.
func (h *Hook) Reload(cfg Config) (disconnected int, err error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	h.reloadMu.Lock()
	defer h.reloadMu.Unlock()
	old := h.ps()
	ps, err := h.provision(cfg, old)
	if err != nil {
		return 0, err
	}
	h.set.Store(ps)
	old.stop(ps.remoteSet())
	return h.reevaluate(ps), nil
}

// reevaluate disconnects the connected clients ps no longer admits.
func (h *Hook) reevaluate(ps *providerSet) (disconnected int) {
	h.sessions.Range(func(_, v any) bool {
		s := v.(*session)
		id := s.id.Load()
		reason := ps.admits(id)
		if reason == "" {
			return true
		}
		if cl := s.client.Value(); cl != nil && h.Disconnect(cl, packets.ErrNotAuthorized, reason) == nil {
			disconnected++
			h.log.Info("authhook: config reloaded, client disconnected", "reason", reason, "provider", id.Provider,
				"username", id.Username, "client", cl.ID, "remote", cl.Net.Remote)
		}
		return true
	})
	return disconnected
}

// admits returns "" when ps would still accept the credential id was verified from, else the reason string.
func (ps *providerSet) admits(id *Identity) string {
	if id.Provider == ProviderAnonymous {
		if ps.cfg.AllowAnonymous {
			return ""
		}
		return reasonNoLongerValid
	}
	spec := ps.byName[id.Provider]
	if spec == nil {
		return reasonProviderRemoved
	}
	f := id.facts
	if f.alg == "" {
		return ""
	}
	if dp := ps.deviceByName[id.Provider]; dp != nil {
		d := dp.registry.lookup(id.Subject)
		if !slices.Contains(dp.algorithms, f.alg) || !slices.Equal(f.audiences(), []string{dp.project}) || d == nil || d.blocked {
			return reasonNoLongerValid
		}
		return ""
	}
	v := ps.byIssuer[f.issuer]
	switch {
	case v == nil || v.spec != spec:
		return reasonNoLongerValid
	case !slices.Contains(spec.algorithms, f.alg):
		return reasonNoLongerValid
	case len(spec.audiences) > 0 && !slices.ContainsFunc(f.audiences(), func(a string) bool { return slices.Contains(spec.audiences, a) }):
		return reasonNoLongerValid
	case len(spec.azp) > 0 && !slices.Contains(spec.azp, f.azp):
		return reasonNoLongerValid
	}
	return ""
}

// RefreshProvider fetches a provider's key sets now and waits for the fetch, at most once per
// auth.unknown_kid_cooldown per key set (the cooldown shared with fetches caused by unknown kids). It returns
// ErrRefreshTooSoon when every key set of the provider was fetched less than the cooldown ago.
func (h *Hook) RefreshProvider(name string) error {
	ps := h.ps()
	spec := ps.byName[name]
	if spec == nil {
		return refuse(ReasonProviderNotFound, "no provider named %q", clip(name))
	}
	if dp := ps.deviceByName[name]; dp != nil {
		dp.registry.scan(false)
		return nil
	}
	rks := ps.remotes[spec]
	if len(rks) == 0 {
		return nil // local keys and secrets never need fetching
	}
	fetched := 0
	var last error
	for _, rk := range rks {
		if ok, err := rk.refreshNow(); ok {
			fetched++
			last = err
		}
	}
	if fetched == 0 {
		return ErrRefreshTooSoon
	}
	return last
}
