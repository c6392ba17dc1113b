package authhook

import (
	"fmt"
	"strings"
)

const (
	defaultLocalIssuer   = "idmq"
	defaultLocalAudience = "idmq"
)

// localSettings is type local: idmq's own issuer, keyed by auth.signing_key_file (see LocalIssuer).
type localSettings struct {
	Issuer         string   `yaml:"issuer"`
	Audiences      []string `yaml:"audiences"`
	Algorithms     []string `yaml:"algorithms"` // checked, then unused: the signing key fixes the algorithm
	UsernamePrefix string   `yaml:"username_prefix"`
	// Attributes lists the attribute names local credentials may carry, so the ACL knows they exist.
	Attributes []string `yaml:"attributes"`
}

func (c *localSettings) validate(errs *problems) {
	if c.Issuer != "" && strings.TrimSpace(c.Issuer) != c.Issuer {
		errs.add("issuer", "must not have surrounding spaces")
	}
	for i, a := range c.Attributes {
		if !attributeName.MatchString(a) {
			errs.add(fmt.Sprintf("attributes[%d]", i), "must be a letter or '_' followed by letters, digits or '_', got %q", a)
		}
	}
	checkAlgorithms(errs, c.Algorithms, false)
	checkAudiences(errs, c.Audiences)
	checkUsernamePrefix(errs, c.UsernamePrefix)
}

func (c *localSettings) resolve(name string) providerSpec {
	s := providerSpec{name: name, audiences: c.Audiences, prefix: c.UsernamePrefix, usernameClaims: []string{"sub"}}
	iss := c.Issuer
	if iss == "" {
		iss = defaultLocalIssuer
	}
	s.issuers = []issuerSpec{{issuer: iss}}
	if len(s.audiences) == 0 {
		s.audiences = []string{defaultLocalAudience}
	}
	return s
}
