package authhook

import "context"

// providerSet is one configuration's providers, built whole by provision and replaced whole by Reload:
// verification reads it through one atomic load, never a mix of two.
type providerSet struct {
	cfg      Config
	specs    []*providerSpec
	byIssuer map[string]*verifier
	byName   map[string]*providerSpec
	remotes  map[*providerSpec][]*remoteKeys
	local    *LocalIssuer
	// cache holds identities mapped under this set's rules: a reload starts with an empty one.
	cache *tokenCache

	devices          []*deviceProvider // in config order
	devicesByProject map[string]*deviceProvider
	deviceByName     map[string]*deviceProvider

	cancels []context.CancelFunc // the devices registries' polls
}

func newProviderSet(cfg Config) *providerSet {
	return &providerSet{
		cfg:              cfg,
		byIssuer:         map[string]*verifier{},
		byName:           map[string]*providerSpec{},
		remotes:          map[*providerSpec][]*remoteKeys{},
		cache:            newTokenCache(cfg.CacheSize),
		devicesByProject: map[string]*deviceProvider{},
		deviceByName:     map[string]*deviceProvider{},
	}
}

// remoteFor is ps's key set for provider and iss if it would be built the same under cfg, else nil.
func (ps *providerSet) remoteFor(provider string, iss issuerSpec, cfg Config) *remoteKeys {
	if ps == nil {
		return nil
	}
	for _, rks := range ps.remotes {
		for _, rk := range rks {
			if rk.provider == provider && rk.issuer == iss.issuer && rk.jwksURL == iss.jwksURL &&
				rk.cooldown == cfg.UnknownKIDCooldown && rk.interval == cfg.JWKSRefreshInterval {
				return rk
			}
		}
	}
	return nil
}

// remoteSet lists ps's key sets (none for a nil ps).
func (ps *providerSet) remoteSet() map[*remoteKeys]bool {
	kept := map[*remoteKeys]bool{}
	if ps == nil {
		return kept
	}
	for _, rks := range ps.remotes {
		for _, rk := range rks {
			kept[rk] = true
		}
	}
	return kept
}

// stop ends ps's background work, except the key sets in keep (taken over by the next set).
func (ps *providerSet) stop(keep map[*remoteKeys]bool) {
	if ps == nil {
		return
	}
	for _, rks := range ps.remotes {
		for _, rk := range rks {
			if !keep[rk] && rk.stop != nil {
				rk.stop()
			}
		}
	}
	for _, cancel := range ps.cancels {
		cancel()
	}
}
