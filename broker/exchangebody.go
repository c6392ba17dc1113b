package broker

import (
	"bytes"
	"encoding/json"
	"io"
	"sync"
)

// bodyBuffers recycles request-body buffers: an exchange body is one JWT (about 1 KiB) and reading it
// should not cost a fresh, growing buffer per request.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// decodeExchangeRequest reads {"token": "...", "provider": "..."}. Almost every body is exactly that, with
// plain ASCII strings, so a single-pass scan handles it; anything else (escapes, non-ASCII, unknown or
// repeated keys, trailing data, invalid JSON) goes to encoding/json, whose answer and error messages are
// the contract. The fast path accepts only bodies encoding/json decodes to the same value (FuzzExchangeBodyDecode).
func decodeExchangeRequest(body io.Reader) (exchangeRequest, error) {
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxRequestBody+bytes.MinRead {
			buf.Reset()
			bodyBuffers.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(body); err != nil {
		return exchangeRequest{}, err
	}
	if req, ok := scanExchangeRequest(buf.Bytes()); ok {
		return req, nil
	}
	var req exchangeRequest
	dec := json.NewDecoder(bytes.NewReader(buf.Bytes()))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	return req, err
}

// scanExchangeRequest is the fast path: an object whose keys are "token" and/or "provider", each at most
// once, with string values made of printable ASCII other than backslash, then only whitespace.
func scanExchangeRequest(b []byte) (req exchangeRequest, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return req, false
	}
	i = skipSpace(b, i+1)
	var seenToken, seenProvider bool
	for first := true; ; first = false {
		if i < len(b) && b[i] == '}' && first {
			i++
			break
		}
		key, next, ok := plainString(b, i)
		if !ok {
			return req, false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return req, false
		}
		value, next, ok := plainString(b, skipSpace(b, i+1))
		if !ok {
			return req, false
		}
		switch k := string(key); {
		case k == "token" && !seenToken:
			req.Token, seenToken = string(value), true
		case k == "provider" && !seenProvider:
			req.Provider, seenProvider = string(value), true
		default:
			return req, false
		}
		i = skipSpace(b, next)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			i++
			break
		}
		return req, false
	}
	return req, skipSpace(b, i) == len(b)
}

// plainString returns the contents of the JSON string starting at b[i] if it needs no unescaping.
// The key is compared as a string without allocating: Go does not allocate for string(b) in a comparison.
func plainString(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c < 0x20 || c == '\\' || c >= 0x80:
			return nil, i, false
		}
	}
	return nil, i, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
