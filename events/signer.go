package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	// SignatureHeader is "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>". A receiver may see
	// several v1 values (a future secret rotation); one matching is enough.
	SignatureHeader = "Idmq-Signature"
	// EventIDHeader repeats the event's id, so a receiver can de-duplicate before parsing the body.
	EventIDHeader = "Idmq-Event-Id"
	// DefaultTolerance is how far a signature's timestamp may be from the receiver's clock.
	DefaultTolerance = 5 * time.Minute
)

// Sign returns the SignatureHeader value for body sent at t. Each attempt is signed afresh, so a retry hours
// later still passes a receiver's clock-skew check.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of Verify.
var (
	ErrBadSignatureHeader = errors.New("events: malformed " + SignatureHeader + " header")
	ErrSignatureMismatch  = errors.New("events: no signature matches")
	ErrTimestampSkew      = errors.New("events: signature timestamp too far from now")
)

// Verify is the receiver's recipe, in Go: parse t and the v1 values, refuse a t more than tolerance away
// from now (a replayed request), compute HMAC-SHA256(secret, t + "." + body) over the raw body as received,
// and compare in constant time. Verify before parsing the JSON.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrBadSignatureHeader
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if s, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, s)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrBadSignatureHeader
	}
	if skew := now.Sub(time.Unix(sec, 0)); skew > tolerance || skew < -tolerance {
		return fmt.Errorf("%w: %s", ErrTimestampSkew, skew.Round(time.Second))
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrSignatureMismatch
}
