package authhook

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// deviceAlgorithms are the algorithms a devices provider may name: those of Cloud IoT Core, and EdDSA. Never HMAC.
var deviceAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// devicesSettings is type devices: Cloud IoT Core / ClearBlade device JWTs, checked against keys registered
// per device (see devices.go).
type devicesSettings struct {
	Algorithms  []string       `yaml:"algorithms"`
	Project     string         `yaml:"project"`
	MaxLifetime time.Duration  `yaml:"max_lifetime"`
	IATSkew     time.Duration  `yaml:"iat_skew"`
	RegistryDir string         `yaml:"registry_dir"`
	Devices     []DeviceConfig `yaml:"devices"`
}

// misplaced explains the identity-provider keys users most often carry over to a devices provider.
func (c *devicesSettings) misplaced(key string) string {
	switch key {
	case "issuer":
		return "does not apply to type devices: device tokens have no iss (the aud is the project)"
	case "audiences":
		return "does not apply to type devices: set project, the one aud device tokens carry"
	case "username_prefix":
		return "does not apply to type devices: the username is the device id"
	}
	return ""
}

// validate parses inline PEM keys, so a bad key fails the config at load; key files and registry_dir are
// read by New.
func (c *devicesSettings) validate(errs *problems) {
	switch {
	case c.Project == "":
		errs.add("project", "is required for type devices (the aud of device tokens, e.g. my-project)")
	case strings.ContainsAny(c.Project, "/ ") || !utf8.ValidString(c.Project):
		errs.add("project", "must be a project id without '/' or spaces, got %q", c.Project)
	}
	if c.MaxLifetime < 0 || c.MaxLifetime > defaultDeviceMaxLifetime || (c.MaxLifetime != 0 && c.MaxLifetime < time.Minute) {
		errs.add("max_lifetime", "must be between 1m and 24h (0 = 24h), got %s", c.MaxLifetime)
	}
	if c.IATSkew < 0 || c.IATSkew > defaultDeviceMaxLifetime || (c.IATSkew != 0 && c.IATSkew < time.Second) {
		errs.add("iat_skew", "must be between 1s and 24h (0 = 10m), got %s", c.IATSkew)
	}
	for i, a := range c.Algorithms {
		if !slices.Contains(deviceAlgorithms, a) {
			errs.add(fmt.Sprintf("algorithms[%d]", i), "a devices provider accepts %s, got %q", strings.Join(deviceAlgorithms, ", "), a)
		}
	}
	if c.RegistryDir == "" && len(c.Devices) == 0 {
		errs.add("registry_dir", "a devices provider needs registry_dir, devices, or both")
	}
	ids := map[string]int{}
	for i, d := range c.Devices {
		at := fmt.Sprintf("devices[%d]", i)
		if !validDeviceID(d.ID) {
			errs.add(at+".id", "must start with a letter or digit, followed by up to 254 letters, digits or - . _ ~ + %%, got %q", d.ID)
		} else if j, dup := ids[d.ID]; dup {
			errs.add(at+".id", "%q is already devices[%d]", d.ID, j)
		} else {
			ids[d.ID] = i
		}
		checkDeviceKeys(errs, at, d)
	}
}

func checkDeviceKeys(errs *problems, at string, d DeviceConfig) {
	if len(d.Keys) == 0 && !d.Blocked {
		errs.add(at+".keys", "device %q has no key: add one, or set blocked: true to refuse it", d.ID)
	}
	if len(d.Keys) > maxDeviceKeys {
		errs.add(at+".keys", "a device has at most %d keys, got %d", maxDeviceKeys, len(d.Keys))
	}
	for k, key := range d.Keys {
		kat := fmt.Sprintf("%s.keys[%d]", at, k)
		switch {
		case (key.PEM == "") == (key.File == ""):
			errs.add(kat, "needs exactly one of pem and file")
		case key.PEM != "":
			if _, err := parseDeviceKeys([]byte(key.PEM)); err != nil {
				errs.add(kat+".pem", "%v", err)
			}
		}
	}
}

// resolve: no issuer, since device tokens have none; the provider is selected by client id and aud.
func (c *devicesSettings) resolve(name string) providerSpec {
	s := providerSpec{name: name, algorithms: c.Algorithms}
	if len(s.algorithms) == 0 {
		s.algorithms = defaultDeviceAlgorithms
	}
	return s
}
