package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxConfigSize bounds what we read: a config file is never megabytes.
const maxConfigSize = 4 << 20

// LoadFile reads and validates a config file. Relative paths inside it resolve against its directory.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.file = path
	return cfg, nil
}

// LoadDefault returns the embedded default configuration.
func LoadDefault() (*Config, error) {
	cfg, err := Parse(DefaultConfigYAML, ".")
	if err != nil {
		return nil, fmt.Errorf("embedded default config: %w", err)
	}
	return cfg, nil
}

// Parse decodes YAML strictly (unknown keys are errors), expands ${VAR} from the environment, applies
// defaults and validates every section. Every error names the field and, where it has one, the line.
func Parse(data []byte, dir string) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("larger than %d bytes", maxConfigSize)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // an empty file is an empty mapping: all defaults
			doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
		} else {
			return nil, err
		}
	}
	root := documentRoot(&doc)
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the top level must be a mapping of keys", root.Line)
	}

	var errs []error
	errs = append(errs, expandEnv(root, "")...)
	cfg := defaultConfig()
	errs = append(errs, checkShape(root, reflect.TypeOf(cfg), "")...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := root.Decode(&cfg); err != nil {
		return nil, err
	}
	cfg.dir = dir
	cfg.Auth.SetDefaults()
	cfg.Auth.SigningKeyFile = cfg.Resolve(cfg.Auth.SigningKeyFile) // relative to the config file, like every path

	if err := cfg.validate(); err != nil {
		errs = append(errs, located(root, "", err)...)
	}
	if err := cfg.Auth.Validate(); err != nil {
		errs = append(errs, located(root, "auth", err)...)
	}
	warnings, err := cfg.ACL.Validate(cfg.Auth.AttributeNames())
	if err != nil {
		errs = append(errs, located(root, "acl", err)...)
	}
	cfg.Events.SetDefaults()
	if err := cfg.Events.Validate(); err != nil {
		errs = append(errs, located(root, "events", err)...)
	}
	clusterWarnings, err := cfg.prepareCluster()
	if err != nil {
		errs = append(errs, located(root, "cluster", err)...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg.warnings = append(warnings, clusterWarnings...)
	return &cfg, nil
}

func documentRoot(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return doc.Content[0]
	}
	return doc
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv substitutes ${VAR} in scalar values (never keys). An unset variable is an error: a secret that
// silently becomes "" is worse than a refusal to start.
func expandEnv(n *yaml.Node, path string) []error {
	var errs []error
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, expandEnv(n.Content[i+1], joinPath(path, n.Content[i].Value))...)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			errs = append(errs, expandEnv(c, fmt.Sprintf("%s[%d]", path, i))...)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return nil
		}
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name := ref[2 : len(ref)-1]
			v, ok := os.LookupEnv(name)
			if !ok {
				errs = append(errs, &FieldError{Path: path, Line: n.Line, Err: fmt.Errorf("environment variable %s is not set", name)})
			}
			return v
		})
		if n.Style == 0 {
			n.Tag = "" // a plain scalar re-resolves, so `max_clients: ${MAX}` becomes an int
		}
	}
	return errs
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var (
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	durationType    = reflect.TypeOf(time.Duration(0))
	timeType        = reflect.TypeOf(time.Time{})
)

// checkShape walks the YAML against the Go type: unknown keys and values of the wrong type are reported with
// their full path and line (yaml.v3 alone says "field x not found in type broker.Config").
func checkShape(n *yaml.Node, t reflect.Type, path string) []error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || t == timeType || t == durationType {
		return decodeLeaf(n, t, path)
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return []error{&FieldError{Path: orRoot(path), Line: n.Line, Err: errors.New("must be a mapping of keys")}}
		}
		fields := yamlFields(t)
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			ft, ok := fields[key.Value]
			if !ok {
				errs = append(errs, &FieldError{Path: joinPath(path, key.Value), Line: key.Line,
					Err: fmt.Errorf("unknown key%s", suggest(key.Value, fields))})
				continue
			}
			errs = append(errs, checkShape(val, ft, joinPath(path, key.Value))...)
		}
		return errs
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return []error{&FieldError{Path: orRoot(path), Line: n.Line, Err: errors.New("must be a list")}}
		}
		var errs []error
		for i, c := range n.Content {
			errs = append(errs, checkShape(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
		return errs
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return []error{&FieldError{Path: orRoot(path), Line: n.Line, Err: errors.New("must be a mapping of keys")}}
		}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, checkShape(n.Content[i+1], t.Elem(), joinPath(path, n.Content[i].Value))...)
		}
		return errs
	default:
		return decodeLeaf(n, t, path)
	}
}

func decodeLeaf(n *yaml.Node, t reflect.Type, path string) []error {
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		msg := err.Error()
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			msg = te.Errors[0]
		}
		msg = strings.TrimPrefix(msg, fmt.Sprintf("line %d: ", n.Line))
		if t == durationType {
			msg = fmt.Sprintf("invalid duration %q (use e.g. 30s, 15m, 24h)", n.Value)
		}
		return []error{&FieldError{Path: orRoot(path), Line: n.Line, Err: errors.New(msg)}}
	}
	return nil
}

func orRoot(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// suggest names the closest known key, for typos like `adress`.
func suggest(key string, fields map[string]reflect.Type) string {
	best, bestDist := "", 3
	for k := range fields {
		if d := editDistance(key, k); d < bestDist || (d == bestDist && best != "" && k < best) {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// located flattens joined errors, makes each FieldError's path absolute by prefixing the section, and adds
// the YAML line of the field it names.
func located(root *yaml.Node, section string, err error) []error {
	var flat []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		flat = append(flat, e)
	}
	walk(err)

	out := make([]error, 0, len(flat))
	for _, e := range flat {
		var fe *FieldError
		if !errors.As(e, &fe) {
			out = append(out, fmt.Errorf("%s: %w", orRoot(section), e))
			continue
		}
		full := joinPath(section, fe.Path)
		out = append(out, &FieldError{Path: full, Line: lineOf(root, full), Err: fe.Err})
	}
	return out
}

// lineOf finds the line of a dotted path like "auth.providers[2].jwks_url"; when the field itself is absent
// (a required key left out) it returns the line of the nearest enclosing node that exists.
func lineOf(root *yaml.Node, path string) int {
	n := root
	line := root.Line
	for _, seg := range splitPath(path) {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		var next *yaml.Node
		if idx, err := strconv.Atoi(seg); err == nil && n.Kind == yaml.SequenceNode {
			if idx >= 0 && idx < len(n.Content) {
				next = n.Content[idx]
				line = next.Line // the item's "- " line, also for a mapping: a key missing from it is reported there
			}
		} else if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == seg {
					next = n.Content[i+1]
					line = n.Content[i].Line
					break
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		if n.Line > 0 && n.Kind != yaml.MappingNode {
			line = n.Line
		}
	}
	return line
}

func splitPath(path string) []string {
	var segs []string
	for _, part := range strings.Split(path, ".") {
		for part != "" {
			open := strings.IndexByte(part, '[')
			if open < 0 {
				segs = append(segs, part)
				break
			}
			if open > 0 {
				segs = append(segs, part[:open])
			}
			end := strings.IndexByte(part[open:], ']')
			if end < 0 {
				segs = append(segs, part[open:])
				break
			}
			segs = append(segs, part[open+1:open+end])
			part = part[open+end+1:]
		}
	}
	return segs
}
