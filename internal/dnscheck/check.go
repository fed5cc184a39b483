package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
)

// Status is the outcome of one check.
type Status string

// Statuses.
const (
	OK        Status = "ok"
	Missing   Status = "missing"
	Different Status = "different"
	Failed    Status = "error" // the lookup itself failed (timeout, SERVFAIL)
)

// Result is the state of one record.
type Result struct {
	Record Record
	Status Status
	Found  []string // what DNS has, in the record's own syntax
	Detail string
}

// Checker looks records up.
type Checker struct {
	// Resolver answers the lookups; nil means net.DefaultResolver. Tests
	// and `doctor -dns-server` use a resolver that dials a chosen server.
	Resolver *net.Resolver
	// Server is the DNS server Resolver asks (host:port), if not the
	// system's: Go's resolver names the system's in its errors whatever
	// server it dialled, so reports put this one in their place.
	Server string
}

// Named puts the checker's DNS server into every DNS error in err's chain
// and returns err.
func (c *Checker) Named(err error) error {
	var de *net.DNSError
	if c.Server != "" && errors.As(err, &de) {
		de.Server = c.Server
	}
	return err
}

func (c *Checker) resolver() *net.Resolver {
	if c.Resolver != nil {
		return c.Resolver
	}
	return net.DefaultResolver
}

// ResolverFor returns a resolver that sends every query to the DNS server
// at addr (host:port), over UDP with TCP fallback as usual.
func ResolverFor(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// CheckRecords looks every record up, in order.
func (c *Checker) CheckRecords(ctx context.Context, recs []Record) []Result {
	out := make([]Result, 0, len(recs))
	for _, r := range recs {
		out = append(out, c.check(ctx, r))
	}
	return out
}

func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// lookupErr turns a lookup error into a result.
func (c *Checker) lookupErr(r Record, err error) Result {
	if notFound(err) {
		return Result{Record: r, Status: Missing}
	}
	return Result{Record: r, Status: Failed, Detail: c.Named(err).Error()}
}

func (c *Checker) check(ctx context.Context, r Record) Result {
	res := c.resolver()
	switch r.Type {
	case A:
		addrs, err := res.LookupHost(ctx, r.Name)
		if err != nil {
			return c.lookupErr(r, err)
		}
		return Result{Record: r, Status: OK, Found: addrs}
	case MX:
		mxs, err := res.LookupMX(ctx, r.Name)
		if err != nil {
			return c.lookupErr(r, err)
		}
		var found []string
		ok := false
		for _, mx := range mxs {
			found = append(found, fmt.Sprintf("%d %s", mx.Pref, mx.Host))
			ok = ok || lower(mx.Host) == r.Value
		}
		if ok {
			return Result{Record: r, Status: OK, Found: found}
		}
		return Result{Record: r, Status: Different, Found: found, Detail: "no MX points at " + r.Value}
	case SRV:
		_, srvs, err := res.LookupSRV(ctx, "", "", r.Name)
		if err != nil {
			return c.lookupErr(r, err)
		}
		var found []string
		ok := false
		for _, s := range srvs {
			found = append(found, fmt.Sprintf("%d %d %d %s", s.Priority, s.Weight, s.Port, s.Target))
			target := lower(s.Target)
			if target == "" {
				target = "."
			}
			if r.Value == "." {
				ok = ok || target == "."
			} else {
				ok = ok || (target == r.Value && int(s.Port) == r.Port)
			}
		}
		if ok {
			return Result{Record: r, Status: OK, Found: found}
		}
		return Result{Record: r, Status: Different, Found: found}
	case CNAME:
		return c.checkAlias(ctx, r)
	case TXT:
		txts, err := res.LookupTXT(ctx, r.Name)
		if err != nil {
			return c.lookupErr(r, err)
		}
		var mine []string
		for _, t := range txts {
			if r.Kind.matches(t) {
				mine = append(mine, t)
			}
		}
		if len(mine) == 0 {
			return Result{Record: r, Status: Missing, Found: txts, Detail: "no " + string(r.Kind) + " record among the TXT records"}
		}
		for _, t := range mine {
			if r.Kind.equal(t, r.Value) {
				return Result{Record: r, Status: OK, Found: mine}
			}
		}
		detail := ""
		if len(mine) > 1 && (r.Kind == KindSPF || r.Kind == KindDMARC) {
			detail = "more than one " + string(r.Kind) + " record: receivers treat that as an error"
		}
		return Result{Record: r, Status: Different, Found: mine, Detail: detail}
	}
	return Result{Record: r, Status: Failed, Detail: "unknown record type " + r.Type}
}

// checkAlias accepts a CNAME to the host name, or addresses equal to the
// host name's: both make clients reach the server.
func (c *Checker) checkAlias(ctx context.Context, r Record) Result {
	res := c.resolver()
	addrs, err := res.LookupHost(ctx, r.Name)
	if err != nil {
		return c.lookupErr(r, err)
	}
	if cname, err := res.LookupCNAME(ctx, r.Name); err == nil && lower(cname) == r.Value {
		return Result{Record: r, Status: OK, Found: []string{cname}}
	}
	want, err := res.LookupHost(ctx, r.Value)
	if err == nil {
		for _, a := range addrs {
			if slices.Contains(want, a) {
				return Result{Record: r, Status: OK, Found: addrs, Detail: "addresses match " + r.Value}
			}
		}
	}
	return Result{Record: r, Status: Different, Found: addrs, Detail: "neither a CNAME to " + r.Value + " nor its addresses"}
}

// CheckReverse reports whether every address of hostname has a PTR record
// naming hostname; receivers reject or junk mail from servers without one.
func (c *Checker) CheckReverse(ctx context.Context, hostname string) []Result {
	res := c.resolver()
	addrs, err := res.LookupHost(ctx, hostname)
	if err != nil {
		return nil // the A check reports it
	}
	var out []Result
	for _, a := range addrs {
		r := Record{Name: a, Type: "PTR", Value: lower(hostname), Why: "reverse DNS of " + a}
		names, err := res.LookupAddr(ctx, a)
		if err != nil {
			out = append(out, c.lookupErr(r, err))
			continue
		}
		st := Different
		for _, n := range names {
			if lower(n) == r.Value {
				st = OK
			}
		}
		out = append(out, Result{Record: r, Status: st, Found: names})
	}
	return out
}

func (k Kind) prefix() string {
	switch k {
	case KindSPF:
		return "v=spf1"
	case KindDKIM:
		return "v=DKIM1"
	case KindDMARC:
		return "v=DMARC1"
	case KindMTASTS:
		return "v=STSv1"
	case KindTLSRPT:
		return "v=TLSRPTv1"
	}
	return ""
}

func (k Kind) matches(txt string) bool {
	t := strings.TrimSpace(txt)
	p := k.prefix()
	if k == KindDKIM && strings.Contains(t, "p=") {
		return true // v= is optional in DKIM key records
	}
	return len(t) >= len(p) && strings.EqualFold(t[:len(p)], p) &&
		(len(t) == len(p) || t[len(p)] == ' ' || t[len(p)] == ';')
}

// tags parses "a=b; c=d" into a map with lower-cased names and values
// stripped of whitespace (DKIM allows whitespace inside p=).
func tags(txt string) map[string]string {
	m := map[string]string{}
	for _, part := range strings.Split(txt, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		m[strings.ToLower(strings.TrimSpace(k))] = strings.Join(strings.Fields(v), "")
	}
	return m
}

// equal compares what matters for each kind: the key for DKIM, the id
// for MTA-STS, every tag for DMARC and TLS-RPT, the mechanisms for SPF.
func (k Kind) equal(found, want string) bool {
	switch k {
	case KindSPF:
		return strings.Join(strings.Fields(strings.ToLower(found)), " ") == strings.Join(strings.Fields(strings.ToLower(want)), " ")
	case KindDKIM:
		return tags(found)["p"] == tags(want)["p"] && tags(found)["p"] != ""
	case KindMTASTS:
		return tags(found)["id"] == tags(want)["id"]
	}
	f, w := tags(found), tags(want)
	if len(f) != len(w) {
		return false
	}
	for key, v := range w {
		if !strings.EqualFold(f[key], v) {
			return false
		}
	}
	return true
}
