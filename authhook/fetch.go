package authhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// maxFetchBody bounds discovery documents and key sets: both come from a network we do not control.
const maxFetchBody = 1 << 20

// fetchError explains why a discovery document or key set could not be fetched, precisely enough for
// `idmq check` to tell DNS from TLS from an HTTP status from bad JSON.
type fetchError struct {
	URL    string
	Kind   string // dns, tls, connect, timeout, http_status, too_large, bad_json, no_keys, bad_discovery
	Status int    // for http_status
	Err    error
}

func (e *fetchError) Error() string {
	var what string
	switch e.Kind {
	case "dns":
		what = "DNS lookup failed"
	case "tls":
		what = "TLS failed"
	case "connect":
		what = "connection failed"
	case "timeout":
		what = "timed out"
	case "http_status":
		return fmt.Sprintf("GET %s: HTTP status %d", e.URL, e.Status)
	case "too_large":
		return fmt.Sprintf("GET %s: response larger than %d bytes", e.URL, maxFetchBody)
	case "bad_json":
		what = "bad JSON"
	case "no_keys":
		what = "no usable signing keys"
	default:
		what = e.Kind
	}
	if e.Err != nil {
		return fmt.Sprintf("GET %s: %s: %v", e.URL, what, e.Err)
	}
	return fmt.Sprintf("GET %s: %s", e.URL, what)
}

func (e *fetchError) Unwrap() error { return e.Err }

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSHandshakeTimeout = 5 * time.Second
	t.ResponseHeaderTimeout = 10 * time.Second
	t.MaxIdleConnsPerHost = 2
	return &http.Client{Transport: t, Timeout: 15 * time.Second}
}

// getJSON fetches url and decodes the body into v, refusing bodies over maxFetchBody.
func getJSON(ctx context.Context, client *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return &fetchError{URL: url, Kind: "connect", Err: err}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return &fetchError{URL: url, Kind: transportKind(err), Err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return &fetchError{URL: url, Kind: "http_status", Status: resp.StatusCode}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchBody+1))
	if err != nil {
		return &fetchError{URL: url, Kind: transportKind(err), Err: err}
	}
	if len(body) > maxFetchBody {
		return &fetchError{URL: url, Kind: "too_large"}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &fetchError{URL: url, Kind: "bad_json", Err: err}
	}
	return nil
}

func transportKind(err error) string {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var recordErr tls.RecordHeaderError
	var alertErr tls.AlertError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr),
		errors.As(err, &invalidCert), errors.As(err, &recordErr), errors.As(err, &alertErr):
		return "tls"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	}
	return "connect"
}

// unwrapURLError drops *url.Error's "Get \"url\":" prefix; fetchError already names the URL.
func unwrapURLError(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}
