package aclhook

import (
	"fmt"
	"strings"
)

// A template is a topic filter that may contain placeholders, parsed once at load.
//
//	%u       the username
//	%c       the client id
//	%{name}  the attribute `name`
//	%%       a literal '%'
type template struct {
	levels []levelTemplate
}

type levelTemplate []part // a literal level is a single part with kind placeholderNone

type placeholderKind uint8

const (
	placeholderNone placeholderKind = iota
	placeholderUsername
	placeholderClientID
	placeholderAttribute
)

type part struct {
	kind placeholderKind
	text string // the literal, or the attribute name
}

func (t template) hasPlaceholders() bool {
	for _, l := range t.levels {
		if len(l) != 1 || l[0].kind != placeholderNone {
			return true
		}
	}
	return false
}

// attributes returns the names used by %{name} placeholders.
func (t template) attributes() []string {
	var names []string
	for _, l := range t.levels {
		for _, p := range l {
			if p.kind == placeholderAttribute {
				names = append(names, p.text)
			}
		}
	}
	return names
}

// parseTemplate parses s and checks that it is a valid topic filter once every placeholder is
// replaced by an ordinary value.
func parseTemplate(s string) (template, error) {
	var (
		t     template
		shape strings.Builder // s with placeholders replaced by "x", to validate as a filter
	)
	for _, raw := range strings.Split(s, "/") {
		var (
			lvl levelTemplate
			lit strings.Builder
		)
		flush := func() {
			if lit.Len() > 0 {
				lvl = append(lvl, part{text: lit.String()})
				lit.Reset()
			}
		}
		for i := 0; i < len(raw); i++ {
			if raw[i] != '%' {
				lit.WriteByte(raw[i])
				shape.WriteByte(raw[i])
				continue
			}
			if i+1 >= len(raw) {
				return template{}, fmt.Errorf("%w: %q ends with a lone '%%' (write %%%% for a literal '%%')", ErrUnknownPlaceholder, s)
			}
			switch raw[i+1] {
			case '%':
				lit.WriteByte('%')
				shape.WriteByte('%')
				i++
			case 'u', 'c':
				flush()
				kind := placeholderUsername
				if raw[i+1] == 'c' {
					kind = placeholderClientID
				}
				lvl = append(lvl, part{kind: kind})
				shape.WriteByte('x')
				i++
			case '{':
				end := strings.IndexByte(raw[i:], '}')
				if end < 0 {
					return template{}, fmt.Errorf("%w: %q has an unterminated %%{", ErrUnknownPlaceholder, s)
				}
				name := raw[i+2 : i+end]
				if !validAttributeName(name) {
					return template{}, fmt.Errorf("%w %q in %q: attribute names are letters, digits, '_', '-', '.' and ':'", ErrUnknownPlaceholder, raw[i:i+end+1], s)
				}
				flush()
				lvl = append(lvl, part{kind: placeholderAttribute, text: name})
				shape.WriteByte('x')
				i += end
			default:
				return template{}, fmt.Errorf("%w %q in %q (want %%u, %%c, %%{name} or %%%%)", ErrUnknownPlaceholder, raw[i:i+2], s)
			}
		}
		flush()
		if len(lvl) == 0 {
			lvl = levelTemplate{{}} // an empty level
		}
		t.levels = append(t.levels, lvl)
		shape.WriteByte('/')
	}
	filter := strings.TrimSuffix(shape.String(), "/")
	if reason := validFilter(filter); reason != "" {
		return template{}, describeFilterError(s, reason)
	}
	return t, nil
}

func validAttributeName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// substitution is the outcome of filling a template for one subject.
type substitution uint8

const (
	substituted  substitution = iota // every placeholder had a usable value
	missingValue                     // a placeholder has no value: the rule does not apply
	unsafeValue                      // a value would act as a wildcard, separator or '$' prefix
)

// fill substitutes s into t. With widen set (deny rules), a level whose value is unsafe becomes '+',
// so a crafted client id or username can only make a deny rule deny more, never skip it.
func (t template) fill(s Subject, widen bool) ([]string, substitution) {
	levels := make([]string, 0, len(t.levels))
	result := substituted
	for i, lt := range t.levels {
		if len(lt) == 1 && lt[0].kind == placeholderNone {
			levels = append(levels, lt[0].text)
			continue
		}
		var b strings.Builder
		for _, p := range lt {
			if p.kind == placeholderNone {
				b.WriteString(p.text)
				continue
			}
			v, ok := s.value(p)
			if !ok {
				return nil, missingValue
			}
			b.WriteString(v)
		}
		level := b.String()
		if !safeLevel(lt, level, i == 0) {
			if !widen {
				return nil, unsafeValue
			}
			level, result = "+", unsafeValue
		}
		levels = append(levels, level)
	}
	return levels, result
}

// safeLevel reports whether a filled level is a plain literal: substituted values never act as
// '+', '#' or '/', never contain U+0000, and never turn the first level into a '$' topic.
func safeLevel(lt levelTemplate, level string, first bool) bool {
	// Literals in a placeholder level cannot be wildcards (parseTemplate checked), so any of these
	// characters came from a value.
	if strings.ContainsAny(level, "+#/\x00") {
		return false
	}
	if first && strings.HasPrefix(level, "$") && !(lt[0].kind == placeholderNone && strings.HasPrefix(lt[0].text, "$")) {
		return false
	}
	return true
}

// value returns the subject's value for a placeholder; an empty value counts as none.
func (s Subject) value(p part) (string, bool) {
	var v string
	switch p.kind {
	case placeholderUsername:
		v = s.Username
	case placeholderClientID:
		v = s.ClientID
	case placeholderAttribute:
		v = s.Attributes[p.text]
	}
	return v, v != ""
}
