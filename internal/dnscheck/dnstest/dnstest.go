// Package dnstest serves a DNS zone from memory on 127.0.0.1, for tests of
// code that looks records up (doctor, its web page).
package dnstest

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// Zone answers queries for records (zone file lines, e.g. "example.org.
// 60 IN MX 10 mail.example.net.") over UDP until the test ends, and
// returns its address. Names it has no record of are NXDOMAIN; a name
// with records of other types answers empty, authoritatively.
func Zone(t testing.TB, records ...string) string {
	t.Helper()
	zone, names := map[string]dns.RR{}, map[string]bool{}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.ToLower(rr.Header().Name)
		zone[name+"/"+dns.TypeToString[rr.Header().Rrtype]] = rr
		names[name] = true
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true // an empty answer is then "no such record", not a lame referral
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		if rr, ok := zone[name+"/"+dns.TypeToString[q.Qtype]]; ok {
			m.Answer = append(m.Answer, rr)
		} else if !names[name] {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m) //nolint:errcheck // the client will retry or time out
	})}
	go srv.ActivateAndServe() //nolint:errcheck // ends with Shutdown
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}
