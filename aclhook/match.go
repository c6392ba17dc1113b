package aclhook

import "strings"

// maxStackLevels is how many levels a request is split into without allocating; deeper topics still
// work, they just allocate.
const maxStackLevels = 32

// splitLevels appends the '/'-separated levels of s to dst. "a//b" has an empty middle level and "/a"
// an empty first level, as in [MQTT-4.7.1-3].
func splitLevels(dst []string, s string) []string {
	for {
		i := strings.IndexByte(s, '/')
		if i < 0 {
			return append(dst, s)
		}
		dst = append(dst, s[:i])
		s = s[i+1:]
	}
}

// covers reports whether every topic matched by req is also matched by filter. Both are split into
// levels; req may contain wildcards (a SUBSCRIBE filter) or not (a topic name, for which covers is
// plain matching). A filter starting with a wildcard never matches a topic starting with '$'
// [MQTT-4.7.2-1], so it covers no request whose first level starts with '$'.
func covers(filter, req []string) bool {
	if len(filter) > 0 && len(req) > 0 && isWildcard(filter[0]) && strings.HasPrefix(req[0], "$") {
		return false
	}
	for i, f := range filter {
		if f == "#" {
			return true // '#' also matches the parent level [MQTT-4.7.1-2], so "a/#" covers "a"
		}
		if i >= len(req) {
			return false
		}
		r := req[i]
		switch {
		case r == "#":
			// req matches this level and everything below, and the parent unless it is the first
			// level: only "+/#" reaches all of that without a '#' here, and only at the top.
			return i == 0 && f == "+" && len(filter) == 2 && filter[1] == "#"
		case f == "+":
			continue // '+' covers any single level, including a '+' in the request
		case r == "+":
			return false
		case r != f:
			return false
		}
	}
	return len(req) == len(filter)
}

func isWildcard(level string) bool { return level == "+" || level == "#" }

// Covers reports whether every topic matched by the filter req is also matched by filter: the
// relation a SUBSCRIBE request must have to a rule that allows it. With a topic name as req it is
// topic matching. A leading "$share/<group>/" on req is not stripped here; see Check.
func Covers(filter, req string) bool {
	var fb, rb [maxStackLevels]string
	return covers(splitLevels(fb[:0], filter), splitLevels(rb[:0], req))
}

// stripShare removes "$share/<group>/" from a shared-subscription filter. mochi recognises the prefix
// case-insensitively, so this does too; ok is false for a malformed shared filter.
func stripShare(filter string) (rest string, ok bool) {
	const prefix = "$share/"
	if len(filter) < len(prefix) || !strings.EqualFold(filter[:len(prefix)], prefix) {
		return filter, true
	}
	rest = filter[len(prefix):]
	i := strings.IndexByte(rest, '/')
	if i <= 0 || i == len(rest)-1 {
		return "", false
	}
	return rest[i+1:], true
}

// validFilter reports why filter is not a valid MQTT topic filter, or "" when it is.
func validFilter(filter string) string {
	if filter == "" {
		return "empty filter" // [MQTT-4.7.3-1]
	}
	if len(filter) > 65535 {
		return "longer than 65535 bytes"
	}
	if strings.IndexByte(filter, 0) >= 0 {
		return "contains U+0000" // [MQTT-4.7.3-2]
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return "'#' must be a whole level and the last one" // [MQTT-4.7.1-2]
		}
		if strings.Contains(l, "+") && l != "+" {
			return "'+' must be a whole level" // [MQTT-4.7.1-3]
		}
	}
	if len(levels) > 1 && strings.EqualFold(levels[0], "$share") {
		return "write the filter without \"$share/<group>/\": it is stripped from requests before matching"
	}
	return ""
}
