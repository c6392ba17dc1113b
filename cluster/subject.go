package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// MQTT topics are not NATS subjects: a level may be empty or hold '.', spaces, '*', '>' or any UTF-8, and a NATS
// token can be none of these. Each topic level becomes exactly one subject token, so a NATS filter still narrows
// per level ('+' -> '*', '#' -> '>'):
//
//   - a level made only of [A-Za-z0-9-] (not empty) is its own token: "sensors/temp-1" -> "sensors.temp-1";
//   - any other level is '_' followed by the level with every byte outside [A-Za-z0-9-] written as '_' and two
//     lowercase hex digits: "" -> "_", "a.b" -> "_a_2eb", "*" -> "__2a", "é" -> "__c3_a9".
//
// Plain tokens never contain '_' and escaped ones always start with it, and an escaped token decodes one way
// only, so the mapping is injective and reversible. Every token is also a valid KV key token.
//
// A subject longer than maxSubjectLen would not fit a NATS protocol line (4 KiB by default, reply subject
// included). Such a topic goes under a second prefix, keeping as many leading level tokens as fit, then a hash
// token of the whole topic: "idmq.t.<levels>.<sha256/128 hex>". It stays unique per topic and narrows by its
// leading levels; FilterSubjects covers it. Messages carry the topic verbatim, so only TopicOf needs it whole.
const (
	subjectRoot = "idmq."
	// SubjectPrefix is the subject space of routed messages on topics of ordinary length.
	SubjectPrefix = subjectRoot + "m."
	// LongSubjectPrefix is the subject space of topics whose subject would exceed maxSubjectLen.
	LongSubjectPrefix = subjectRoot + "t."
	maxSubjectLen     = 1024
	maxClientKeyLen   = 512
	hashTokLen        = 32
)

// ErrTruncatedSubject: the subject of a very long topic holds a hash, not the whole topic.
var ErrTruncatedSubject = errors.New("cluster: subject of a long topic is truncated; read the topic from the message")

// ErrNotTopicSubject: the subject was not produced by TopicSubject.
var ErrNotTopicSubject = errors.New("cluster: not a routed topic subject")

const hexDigits = "0123456789abcdef"

func plainByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-'
}

func isPlain(level string) bool {
	if level == "" {
		return false
	}
	for i := 0; i < len(level); i++ {
		if !plainByte(level[i]) {
			return false
		}
	}
	return true
}

// appendLevel appends the token of one topic level.
func appendLevel(dst []byte, level string) []byte {
	if isPlain(level) {
		return append(dst, level...)
	}
	dst = append(dst, '_')
	for i := 0; i < len(level); i++ {
		b := level[i]
		if plainByte(b) {
			dst = append(dst, b)
			continue
		}
		dst = append(dst, '_', hexDigits[b>>4], hexDigits[b&0xf])
	}
	return dst
}

// decodeLevel inverts appendLevel; it refuses every token appendLevel cannot produce.
func decodeLevel(tok string) (string, bool) {
	if tok == "" {
		return "", false
	}
	if tok[0] != '_' {
		return tok, isPlain(tok)
	}
	out := make([]byte, 0, len(tok))
	for i := 1; i < len(tok); i++ {
		b := tok[i]
		switch {
		case plainByte(b):
			out = append(out, b)
		case b == '_' && i+2 < len(tok) && hexVal(tok[i+1]) >= 0 && hexVal(tok[i+2]) >= 0:
			v := byte(hexVal(tok[i+1])<<4 | hexVal(tok[i+2]))
			if plainByte(v) { // would have been written as itself
				return "", false
			}
			out = append(out, v)
			i += 2
		default:
			return "", false
		}
	}
	level := string(out)
	if isPlain(level) { // would have been a plain token
		return "", false
	}
	return level, true
}

func hexVal(b byte) int {
	switch {
	case b >= '0' && b <= '9':
		return int(b - '0')
	case b >= 'a' && b <= 'f':
		return int(b-'a') + 10
	}
	return -1
}

// TopicSubject is the subject a message on topic is published to.
func TopicSubject(topic string) string {
	buf := make([]byte, 0, len(SubjectPrefix)+len(topic)+8)
	buf = append(buf, SubjectPrefix...)
	marks := make([]int, 0, 8) // buf length after each complete level
	rest := topic
	for i := 0; ; i++ { // level by level, without strings.Split's slice: this runs for every routed publish
		level, next, more := strings.Cut(rest, "/")
		if i > 0 {
			buf = append(buf, '.')
		}
		buf = appendLevel(buf, level)
		marks = append(marks, len(buf))
		if len(buf) > maxSubjectLen {
			return longSubject(buf, marks, topic)
		}
		if !more {
			return string(buf)
		}
		rest = next
	}
}

func longSubject(buf []byte, marks []int, topic string) string {
	const tail = 1 + hashTokLen // ".<hash>"
	keep := len(SubjectPrefix)
	for _, m := range marks {
		if m+tail <= maxSubjectLen {
			keep = m
		}
	}
	sum := sha256.Sum256([]byte(topic))
	out := make([]byte, 0, keep+tail)
	out = append(out, LongSubjectPrefix...)
	if keep > len(SubjectPrefix) {
		out = append(out, buf[len(SubjectPrefix):keep]...)
		out = append(out, '.')
	}
	out = append(out, hex.EncodeToString(sum[:])[:hashTokLen]...)
	return string(out)
}

// RetainedKey is the retained bucket's key of topic: its subject without the "idmq." root, so that
// FilterSubjects' results, stripped the same way, select retained messages per level.
func RetainedKey(topic string) string { return strings.TrimPrefix(TopicSubject(topic), subjectRoot) }

// ClientKey is the key of a client id in the sessions and owners buckets: the id encoded as one level token
// (so any MQTT client id, empty included, is a valid and distinct KV key), or for an id whose token would be
// longer than maxClientKeyLen, "=" and the SHA-256 of the id ('=' appears in no level token).
func ClientKey(clientID string) string {
	tok := appendLevel(make([]byte, 0, len(clientID)+8), clientID)
	if len(tok) <= maxClientKeyLen {
		return string(tok)
	}
	sum := sha256.Sum256([]byte(clientID))
	return "=" + hex.EncodeToString(sum[:])
}

// TopicOf inverts TopicSubject. It fails with ErrTruncatedSubject for the subject of a very long topic.
func TopicOf(subject string) (string, error) {
	if strings.HasPrefix(subject, LongSubjectPrefix) {
		return "", ErrTruncatedSubject
	}
	key, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok {
		return "", ErrNotTopicSubject
	}
	toks := strings.Split(key, ".")
	levels := make([]string, len(toks))
	for i, tok := range toks {
		level, ok := decodeLevel(tok)
		if !ok {
			return "", ErrNotTopicSubject
		}
		levels[i] = level
	}
	return strings.Join(levels, "/"), nil
}

// FilterSubjects returns NATS subject filters that together cover every subject of a topic matching the MQTT
// topic filter: a superset, since mochi does the exact MQTT match ('$' rules included). The filters do not
// overlap one another, as a JetStream consumer requires. filter must be valid MQTT ('#' last, wildcards alone
// in their level).
func FilterSubjects(filter string) []string {
	levels := strings.Split(filter, "/")
	var out []string
	buf := make([]byte, 0, len(filter)+8) // tokens of the levels so far, without prefix
	for i, level := range levels {
		if level == "#" {
			// "a/#" also matches "a" [MQTT-4.7.1-2].
			if i == 0 {
				return append(out, SubjectPrefix+">", LongSubjectPrefix+">")
			}
			b := string(buf)
			return append(out, SubjectPrefix+b, SubjectPrefix+b+".>", LongSubjectPrefix+b+".>")
		}
		// A long topic kept only its first i levels, then its hash.
		out = append(out, LongSubjectPrefix+string(buf)+sep(i)+"*")
		if i > 0 {
			buf = append(buf, '.')
		}
		if level == "+" {
			buf = append(buf, '*')
		} else {
			buf = appendLevel(buf, level)
		}
		if len(SubjectPrefix)+len(buf) > maxSubjectLen {
			return out // every matching topic is long: the filters so far cover it
		}
	}
	return append(out, SubjectPrefix+string(buf))
}

func sep(levelsSoFar int) string {
	if levelsSoFar == 0 {
		return ""
	}
	return "."
}
