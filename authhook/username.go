package authhook

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// escapeUsername makes a claim value safe to use as an MQTT username and in topics (%u): '+', '#', '/', '%',
// control characters, invalid UTF-8 and a leading '$' are percent-encoded byte by byte. Because '%' itself is
// always encoded, the mapping is injective: two different claim values never give the same username.
func escapeUsername(s string) string {
	if !needsEscape(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if escapeRune(r, size, i == 0) {
			for j := i; j < i+size; j++ {
				b.WriteByte('%')
				b.WriteByte(hex[s[j]>>4])
				b.WriteByte(hex[s[j]&0xF])
			}
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if escapeRune(r, size, i == 0) {
			return true
		}
		i += size
	}
	return false
}

func escapeRune(r rune, size int, first bool) bool {
	switch {
	case r == '+', r == '#', r == '/', r == '%':
		return true
	case r == '$' && first:
		return true
	case r == utf8.RuneError && size == 1:
		return true
	}
	return unicode.IsControl(r)
}

// safeUsername reports whether s can be used as a username as it is: no wildcard, level separator or control
// character, no leading '$' (and valid UTF-8). Unlike escapeUsername's output it may contain '%'.
func safeUsername(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r != '%' && escapeRune(r, size, i == 0) {
			return false
		}
		i += size
	}
	return true
}
