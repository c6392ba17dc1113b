package broker

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxTrackedIPs bounds the limiter table: past it, the longest-idle half is forgotten (those clients
// simply start again with a full bucket), so a scan from many addresses cannot grow memory without end.
const maxTrackedIPs = 50_000

// ipLimiter is a token bucket per remote IP.
type ipLimiter struct {
	mu      sync.Mutex
	rate    rate.Limit
	burst   int
	clients map[string]*ipBucket
	now     func() time.Time
}

type ipBucket struct {
	limiter  *rate.Limiter
	lastSeen time.Time
}

func newIPLimiter(perSecond float64, burst int) *ipLimiter {
	return &ipLimiter{rate: rate.Limit(perSecond), burst: burst, clients: map[string]*ipBucket{}, now: time.Now}
}

// allow takes one token for ip; when none is left it says how long until one is.
func (l *ipLimiter) allow(ip string) (ok bool, retryAfter time.Duration) { return l.allowN(ip, 1) }

// allowN takes n tokens for ip at once, or none. n above the burst never fits: retryAfter is then
// rate.InfDuration.
func (l *ipLimiter) allowN(ip string, n int) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, found := l.clients[ip]
	if !found {
		if len(l.clients) >= maxTrackedIPs {
			l.forgetIdle(now)
		}
		b = &ipBucket{limiter: rate.NewLimiter(l.rate, l.burst)}
		l.clients[ip] = b
	}
	b.lastSeen = now
	r := b.limiter.ReserveN(now, n)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// setRate changes the bucket of every address, those already tracked included (a reload).
func (l *ipLimiter) setRate(perSecond float64, burst int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate, l.burst = rate.Limit(perSecond), burst
	now := l.now()
	for _, b := range l.clients {
		b.limiter.SetLimitAt(now, l.rate)
		b.limiter.SetBurstAt(now, burst)
	}
}

// forgetIdle drops buckets that are full again (idle long enough to refill) and, if that is not enough,
// the older half.
func (l *ipLimiter) forgetIdle(now time.Time) {
	refill := time.Duration(float64(l.burst)/float64(l.rate)*float64(time.Second)) + time.Second
	for ip, b := range l.clients {
		if now.Sub(b.lastSeen) > refill {
			delete(l.clients, ip)
		}
	}
	if len(l.clients) < maxTrackedIPs/2 {
		return
	}
	cut := now
	for _, b := range l.clients {
		if b.lastSeen.Before(cut) {
			cut = b.lastSeen
		}
	}
	// Walk the cut forward until about half is gone; the table is rarely this full.
	span := now.Sub(cut) / 2
	for ip, b := range l.clients {
		if b.lastSeen.Before(cut.Add(span)) {
			delete(l.clients, ip)
		}
	}
}

// remoteIP is the TCP peer's address. X-Forwarded-For is not trusted: a reverse proxy in front of idmq
// would make every client one IP, which operators must size the limit for.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
