package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// publishPath is the backend's publish endpoint: one message as a JSON object, or up to maxPublishBatch
// as a JSON array answered item by item, in order.
const publishPath = "/v1/publish"

// maxPublishBatch is the most messages one request may carry (and the default burst of a key's rate limit,
// so that a full batch fits).
const maxPublishBatch = 100

// Request bodies of POST /v1/publish may be publishBodyFactor x mqtt.max_packet_size (a message in base64
// and JSON escapes is larger than its packet), within these bounds.
const (
	publishBodyFactor = 4
	minPublishBody    = 1 << 20
	maxPublishBody    = 64 << 20
)

// Results of idmq_http_publish_total: one per message, or one per request refused as a whole.
const (
	resultPublished    = "published"
	resultInvalid      = "invalid"
	resultUnauthorized = "unauthorized"
	resultForbidden    = "forbidden"
	resultTooLarge     = "too_large"
	resultRateLimited  = "rate_limited"
	resultFailed       = "failed"
)

type publishAPI struct {
	b     *Broker
	pub   *httpPublisher
	limit *ipLimiter // per key (by digest), counted in messages
	total *prometheus.CounterVec
}

func (b *Broker) newPublishAPI() *publishAPI {
	rl := b.cfg.HTTP.PublishRateLimit
	a := &publishAPI{
		b:     b,
		pub:   newHTTPPublisher(b.server, func() string { return b.live.Load().publish.publisher }),
		limit: newIPLimiter(rl.PerSecond, rl.Burst),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idmq_http_publish_total",
			Help: "POST /v1/publish: messages by result; a request refused as a whole counts once.",
		}, []string{"result"}),
	}
	for _, r := range []string{resultPublished, resultInvalid, resultUnauthorized, resultForbidden, resultTooLarge, resultRateLimited, resultFailed} {
		a.total.WithLabelValues(r)
	}
	b.registry.MustRegister(a.total)
	return a
}

// publishResult is the answer for one message; a single message's answer is its own, with its status.
type publishResult struct {
	Status  int    `json:"status"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// ServeHTTP authenticates like the admin API (404 while no key may publish, 401 without a key, 403 with a
// wrong one), then publishes each message in order. A batch answers 200 when every message was published,
// 207 when some were not; each item's status says which.
func (a *publishAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	access := a.b.live.Load().publish
	if access.off() {
		http.NotFound(w, r)
		return
	}
	key, ok := bearer(r)
	if !ok {
		a.refuse(w, resultUnauthorized, http.StatusUnauthorized, "unauthorized", "a publish or admin key is required: Authorization: Bearer <key>")
		return
	}
	caller, ok := access.identify(key)
	if !ok {
		a.b.log.Warn("publish API: wrong key", "remote", r.RemoteAddr)
		a.refuse(w, resultForbidden, http.StatusForbidden, "forbidden", "the key is not valid")
		return
	}
	raws, perr := a.readMessages(w, r)
	if perr != nil {
		result := resultInvalid
		if perr.status == http.StatusRequestEntityTooLarge {
			result = resultTooLarge
		}
		a.refuse(w, result, perr.status, perr.code, perr.message)
		return
	}
	if ok, retry := a.limit.allowN(caller.bucket, len(raws.items)); !ok {
		msg := "this key's rate limit (http.publish_rate_limit) is exhausted"
		if retry == rate.InfDuration {
			msg = fmt.Sprintf("%d messages are more than this key's burst (http.publish_rate_limit.burst): send smaller batches", len(raws.items))
		} else {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
		}
		a.refuse(w, resultRateLimited, http.StatusTooManyRequests, "rate_limited", msg)
		return
	}
	if !a.b.ready.Load() || (a.b.cluster != nil && !a.b.cluster.c.Ready()) {
		a.refuse(w, resultFailed, http.StatusServiceUnavailable, "unavailable", "the broker is not ready (starting, stopping, or out of its cluster)")
		return
	}
	results := a.publishAll(caller, access.publisher, raws.items, r.RemoteAddr)
	if !raws.batch {
		writeJSON(w, results[0].Status, results[0])
		return
	}
	status := http.StatusOK
	for _, res := range results {
		if res.Status != http.StatusOK {
			status = http.StatusMultiStatus
		}
	}
	writeJSON(w, status, results)
}

// publishAll publishes the messages in order, one result each.
func (a *publishAPI) publishAll(caller publishCaller, publisher string, items [][]byte, remote string) []publishResult {
	results := make([]publishResult, len(items))
	for i, raw := range items {
		if i > 0 && results[i-1].Status == http.StatusServiceUnavailable {
			// The broker could not take a message: the later ones are not tried, so that a client
			// sending the failed ones again keeps their order (and does not wait out each one's timeout).
			results[i] = publishResult{Status: http.StatusServiceUnavailable, Error: "not_attempted",
				Message: "an earlier message of this batch was not published; this one was not tried"}
			a.total.WithLabelValues(resultFailed).Inc()
			continue
		}
		results[i] = a.publishOne(caller, publisher, raw, remote)
	}
	return results
}

func (a *publishAPI) refuse(w http.ResponseWriter, result string, status int, code, message string) {
	a.total.WithLabelValues(result).Inc()
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="idmq publish"`)
	}
	writeError(w, status, code, message)
}

type publishBody struct {
	items [][]byte
	batch bool
}

// readMessages reads the body: a JSON object, or an array of 1 to maxPublishBatch of them. Items are
// decoded one by one later, so one bad item does not fail its batch.
func (a *publishAPI) readMessages(w http.ResponseWriter, r *http.Request) (publishBody, *publishError) {
	limit := min(max(publishBodyFactor*int64(a.maxPacketSize()), minPublishBody), maxPublishBody)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return publishBody{}, &publishError{status: http.StatusRequestEntityTooLarge, code: "body_too_large",
			message: fmt.Sprintf("the body is larger than %d bytes (%d x mqtt.max_packet_size)", limit, publishBodyFactor)}
	}
	if err != nil {
		return publishBody{}, badRequest("invalid_json", "reading the body: %v", err)
	}
	if !utf8.Valid(body) {
		// encoding/json would quietly turn invalid bytes into U+FFFD, in a topic too.
		return publishBody{}, badRequest("invalid_json", "the body is not valid UTF-8")
	}
	body = bytes.TrimSpace(body)
	if !bytes.HasPrefix(body, []byte("[")) {
		return publishBody{items: [][]byte{body}}, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(body, &items); err != nil {
		return publishBody{}, badRequest("invalid_json", "the body is not a JSON array of messages: %v", err)
	}
	switch {
	case len(items) == 0:
		return publishBody{}, badRequest("empty_batch", "the batch has no messages")
	case len(items) > maxPublishBatch:
		return publishBody{}, badRequest("batch_too_large", "a batch may hold at most %d messages, not %d", maxPublishBatch, len(items))
	}
	out := publishBody{batch: true, items: make([][]byte, len(items))}
	for i, it := range items {
		out.items[i] = it
	}
	return out, nil
}

func (a *publishAPI) maxPacketSize() uint32 {
	return a.b.server.Options.Capabilities.MaximumPacketSize
}

// publishOne validates, authorizes and publishes one message, and counts its result.
func (a *publishAPI) publishOne(caller publishCaller, publisher string, raw []byte, remote string) publishResult {
	res := a.publishMessage(caller, publisher, raw)
	switch res.Status {
	case http.StatusOK:
		a.total.WithLabelValues(resultPublished).Inc()
	case http.StatusForbidden:
		a.total.WithLabelValues(resultForbidden).Inc()
	case http.StatusRequestEntityTooLarge:
		a.total.WithLabelValues(resultTooLarge).Inc()
	case http.StatusBadRequest:
		a.total.WithLabelValues(resultInvalid).Inc()
	default:
		a.total.WithLabelValues(resultFailed).Inc()
		a.b.log.Error("publish API: message not published", "remote", remote, "error", res.Message)
	}
	return res
}

func (a *publishAPI) publishMessage(caller publishCaller, publisher string, raw []byte) publishResult {
	fail := func(e *publishError) publishResult {
		return publishResult{Status: e.status, Error: e.code, Message: e.message}
	}
	m, perr := decodeMessage(raw)
	if perr != nil {
		return fail(perr)
	}
	pk, perr := m.packet()
	if perr != nil {
		return fail(perr)
	}
	if !caller.allows(pk.TopicName) {
		return fail(&publishError{status: http.StatusForbidden, code: "topic_not_allowed",
			message: fmt.Sprintf("this key may not publish to %q", pk.TopicName)})
	}
	if size, limit := encodedSize(pk), a.maxPacketSize(); limit > 0 && size > int(limit) {
		return fail(&publishError{status: http.StatusRequestEntityTooLarge, code: "packet_too_large",
			message: fmt.Sprintf("the message is %d bytes as an MQTT packet, more than mqtt.max_packet_size (%d)", size, limit)})
	}
	start := time.Now()
	if err := a.pub.publish(publisher, pk); err != nil {
		return fail(&publishError{status: http.StatusServiceUnavailable, code: "publish_failed",
			message: fmt.Sprintf("not published (after %s): %v; send it again (it may then arrive twice)", time.Since(start).Round(time.Millisecond), err)})
	}
	return publishResult{Status: http.StatusOK}
}
