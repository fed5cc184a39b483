package outbound_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd/outbound"
)

// dialMap routes the worker's connections by IP address to fake MX hosts
// on loopback, so several "hosts" can listen on one port number each;
// an address not in the map refuses the connection.
func dialMap(hosts map[string]*smtptest.Server) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ip, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		mx, ok := hosts[ip]
		if !ok {
			return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("connection refused (test: nothing at %s)", addr)}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, mx.Addr)
	}
}

// TestOutboundRouting: MX records are tried in preference order whatever
// order DNS returns them in; a domain without MX records gets its mail at
// its A or AAAA address (RFC 5321 §5.1); an MX whose STARTTLS handshake
// fails gets the message in plain text on a new connection (opportunistic
// TLS, as Postfix's "may" level).
func TestOutboundRouting(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rcpt     string
		mx       []*net.MX           // records of the recipient domain, in DNS order
		ips      map[string][]string // host → addresses
		up       map[string]string   // address → which fake MX answers there
		badTLS   map[string]bool     // fake MXs whose STARTTLS handshake fails
		wantHost string              // the fake MX that must get the message
		wantTLS  bool
	}{
		{name: "preference order, DNS unsorted", rcpt: "a@pref.test",
			mx:  []*net.MX{{Host: "mx20.pref.test.", Pref: 20}, {Host: "mx30.pref.test.", Pref: 30}, {Host: "mx10.pref.test.", Pref: 10}},
			ips: map[string][]string{"mx10.pref.test": {"192.0.2.10"}, "mx20.pref.test": {"192.0.2.20"}, "mx30.pref.test": {"192.0.2.30"}},
			up:  map[string]string{"192.0.2.10": "ten", "192.0.2.20": "twenty", "192.0.2.30": "thirty"}, wantHost: "ten", wantTLS: true},
		{name: "preferred MX down", rcpt: "a@pref.test",
			mx:  []*net.MX{{Host: "mx20.pref.test.", Pref: 20}, {Host: "mx30.pref.test.", Pref: 30}, {Host: "mx10.pref.test.", Pref: 10}},
			ips: map[string][]string{"mx10.pref.test": {"192.0.2.10"}, "mx20.pref.test": {"192.0.2.20"}, "mx30.pref.test": {"192.0.2.30"}},
			up:  map[string]string{"192.0.2.20": "twenty", "192.0.2.30": "thirty"}, wantHost: "twenty", wantTLS: true},
		{name: "no MX: A record", rcpt: "a@bare.test",
			ips: map[string][]string{"bare.test": {"192.0.2.40"}},
			up:  map[string]string{"192.0.2.40": "bare"}, wantHost: "bare", wantTLS: true},
		{name: "no MX: AAAA record", rcpt: "a@bare6.test",
			ips: map[string][]string{"bare6.test": {"2001:db8::25"}},
			up:  map[string]string{"2001:db8::25": "bare6"}, wantHost: "bare6", wantTLS: true},
		{name: "STARTTLS handshake fails: plain text", rcpt: "a@badtls.test",
			mx:     []*net.MX{{Host: "mx.badtls.test", Pref: 10}},
			ips:    map[string][]string{"mx.badtls.test": {"192.0.2.50"}},
			up:     map[string]string{"192.0.2.50": "badtls"},
			badTLS: map[string]bool{"badtls": true}, wantHost: "badtls", wantTLS: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			hosts := map[string]*smtptest.Server{}
			byIP := map[string]*smtptest.Server{}
			for ip, name := range tc.up {
				if hosts[name] == nil {
					cfg := e.serverTLS
					if tc.badTLS[name] {
						cfg = &tls.Config{} // no certificate: every handshake fails
					}
					hosts[name] = smtptest.NewMX(t, cfg)
				}
				byIP[ip] = hosts[name]
			}
			res := &smtptest.Resolver{MX: map[string][]*net.MX{}, IPs: map[string][]net.IPAddr{}}
			domain := tc.rcpt[strings.IndexByte(tc.rcpt, '@')+1:]
			if tc.mx != nil {
				res.MX[domain] = tc.mx
			}
			for h, addrs := range tc.ips {
				for _, a := range addrs {
					res.IPs[h] = append(res.IPs[h], net.IPAddr{IP: net.ParseIP(a)})
				}
			}
			smtptest.StartWorker(t, e.st, hosts[tc.wantHost], func(c *outbound.Config) {
				c.Resolver = res
				c.Dial = dialMap(byIP)
			})
			e.submit(t, "alice@example.org", []string{tc.rcpt}, crlf("From: alice@example.org\nSubject: routed\n\nbody\n"))
			want := hosts[tc.wantHost]
			smtptest.WaitFor(t, "delivery", func() bool { return len(want.Deliveries()) == 1 && e.queueLen(t) == 0 })
			for name, mx := range hosts {
				if name == tc.wantHost {
					continue
				}
				if n := mx.Conns(); n != 0 {
					t.Errorf("%s got %d connections; only %s should have been tried", name, n, tc.wantHost)
				}
			}
			if tlsSeen := want.TLSSeen(); tlsSeen != tc.wantTLS {
				t.Errorf("TLS used: %v, want %v", tlsSeen, tc.wantTLS)
			}
			if tc.badTLS[tc.wantHost] && want.Conns() != 2 {
				t.Errorf("%d connections to the MX with broken TLS, want 2 (TLS, then plain text)", want.Conns())
			}
		})
	}
}
