package smtpd

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Replies to connections over a limit, written raw before go-smtp sees the
// connection (on 465 before the TLS handshake, as other servers do).
const (
	tooManyConnsFromIP = "421 4.7.0 Too many connections from your address; try again later\r\n"
	tooManyConns       = "421 4.7.0 Too many connections; try again later\r\n"
)

// ipLimiter counts open connections per remote IP address (IPv6: per
// /64, see limitKey). One is shared by all listeners of a backend (587 and
// 465 count together).
type ipLimiter struct {
	max   int
	mu    sync.Mutex
	conns map[string]int
}

func newIPLimiter(max int) *ipLimiter { return &ipLimiter{max: max, conns: map[string]int{}} }

func (l *ipLimiter) acquire(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[ip] >= l.max {
		return false
	}
	l.conns[ip]++
	return true
}

func (l *ipLimiter) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[ip]--; l.conns[ip] <= 0 {
		delete(l.conns, ip)
	}
}

// limits returns the Server.wrap hook enforcing a total of maxTotal open
// connections on one listener (each call makes a new count) and perIP's
// limit per remote address. Connections over either limit are told 421 and
// closed without reaching go-smtp, so they cost no session or store work.
func limits(maxTotal int, perIP *ipLimiter, log *slog.Logger) func(net.Listener) net.Listener {
	return func(l net.Listener) net.Listener {
		return &limitListener{Listener: l, total: make(chan struct{}, maxTotal), perIP: perIP, log: log}
	}
}

// limitListener enforces the connection limits of limits.
type limitListener struct {
	net.Listener
	total chan struct{} // a semaphore: one element per open connection
	perIP *ipLimiter
	log   *slog.Logger
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		remote := hostOf(c.RemoteAddr())
		key := limitKey(remote)
		if !l.perIP.acquire(key) {
			l.refuse(c, tooManyConnsFromIP, "too many connections from one address", remote)
			continue
		}
		select {
		case l.total <- struct{}{}:
		default:
			l.perIP.release(key)
			l.refuse(c, tooManyConns, "too many connections in total", remote)
			continue
		}
		return &limitedConn{Conn: c, release: func() { <-l.total; l.perIP.release(key) }}, nil
	}
}

// refuse answers c with reply and closes it. Its log line has remote as a
// session's lines do, but no conn: no session exists.
func (l *limitListener) refuse(c net.Conn, reply, why, remote string) {
	l.log.Warn("smtp: connection refused: "+why, "remote", remote)
	go func() {
		// A goroutine, so a slow reader cannot stall Accept.
		c.SetWriteDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // best effort
		io.WriteString(c, reply)                             //nolint:errcheck // best effort
		c.Close()
	}()
}

// limitedConn gives its slots back once, however often it is closed (the
// TLS layer and go-smtp may both close it).
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// limitKey is what the per-IP limits count connections by: an IPv4
// address, or the /64 prefix of an IPv6 one (one site or host gets a /64
// and may use any address in it).
func limitKey(host string) string {
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return (&net.IPNet{IP: ip.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}

func hostOf(a net.Addr) string {
	s := a.String()
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}
