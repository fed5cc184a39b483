// Package inboundauth evaluates SPF, DKIM and DMARC for a message received
// from the internet and decides what to do with it: deliver, file to Junk,
// refuse, or ask the sender to retry. It does DNS only through an injected
// Resolver, so tests answer from memory and never reach the internet.
//
// Policy, in order:
//   - DMARC pass (SPF or DKIM pass aligned with the From domain): deliver.
//   - DMARC fail with p=reject (sp= for a subdomain found through the
//     organisational domain's record): refuse with 5xx, unless an aligned
//     check failed only temporarily, then 4xx so the sender retries.
//   - DMARC fail with p=quarantine: Junk.
//   - pct below 100 is applied deterministically as the next milder policy
//     for every message (reject → quarantine, quarantine → none), so mail is
//     never refused that the domain owner wanted accepted; DMARC does not
//     require sampling to be random.
//   - No DMARC record and SPF fail with no DKIM signature passing for the
//     From domain's organisational domain: Junk.
//   - DMARC record temporarily unavailable: 4xx, the sender retries.
//   - A message with several From domains cannot be attributed to one
//     policy: dmarc=permerror, Junk.
//   - A message with no usable From domain (no From field, or none with an
//     address) fails DMARC (RFC 7489 §6.6.1): dmarc=permerror, Junk.
package inboundauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// Resolver is the DNS access the checks need (the methods SPF macros and
// mechanisms use; DKIM and DMARC need only LookupTXT). *net.Resolver
// implements it. Lookups for a name that does not exist must fail with a
// *net.DNSError whose IsNotFound is set, and temporary failures with one
// whose IsTemporary or IsTimeout is set, as net.Resolver does.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

var _ Resolver = (*net.Resolver)(nil)

// maxDKIMSignatures bounds the signatures verified per message: each costs
// a DNS lookup and a public-key operation, and a sender could add many.
const maxDKIMSignatures = 5

// Action is what to do with a message.
type Action int

// Actions, from mildest to strictest.
const (
	Deliver  Action = iota // to INBOX
	Junk                   // to the recipients' Junk mailbox
	Reject                 // 550 5.7.1, nothing stored
	TempFail               // 451 4.7.x, nothing stored; the sender retries
)

func (a Action) String() string {
	switch a {
	case Deliver:
		return "deliver"
	case Junk:
		return "junk"
	case Reject:
		return "reject"
	case TempFail:
		return "tempfail"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Input describes one received message's envelope and From header.
type Input struct {
	IP       net.IP
	Helo     string
	MailFrom string // envelope sender; "" for the null sender <>
	// FromDomains are the domains of the From header's addresses (one in
	// practice; none when the field is missing or holds no address, which
	// fails DMARC).
	FromDomains []string
}

// Verdict is the outcome of all checks.
type Verdict struct {
	SPF     authres.SPFResult
	DKIM    []authres.DKIMResult // one per signature verified; empty: no signature
	DMARC   authres.DMARCResult
	Policy  dmarc.Policy // the policy applied to a DMARC failure, after pct
	Aligned bool         // DMARC pass: an aligned SPF or DKIM pass exists
	Action  Action
	Why     string // a short explanation of Action, for logs and replies

	spfDomain string // the domain SPF checked, as received (for alignment)
}

// Results returns the verdict in authres form: spf, each dkim, dmarc.
func (v *Verdict) Results() []authres.Result {
	res := []authres.Result{&v.SPF}
	if len(v.DKIM) == 0 {
		res = append(res, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for i := range v.DKIM {
		res = append(res, &v.DKIM[i])
	}
	return append(res, &v.DMARC)
}

// Header returns one complete Authentication-Results header field,
// CRLF-terminated and folded after each result so no line gets long.
func (v *Verdict) Header(authservID string) string {
	// Format each result alone and fold between them; authres leaves a
	// trailing space after a result without parameters.
	parts := []string{authservID}
	for _, r := range v.Results() {
		s := authres.Format("", []authres.Result{r})
		parts = append(parts, strings.TrimSpace(strings.TrimPrefix(s, "; ")))
	}
	return "Authentication-Results: " + strings.Join(parts, ";\r\n\t") + "\r\n"
}

// Checker runs the checks. It is safe for concurrent use.
type Checker struct {
	r Resolver
}

// New returns a Checker using r (net.DefaultResolver in production). It
// panics if r is nil: there is no default, so that no test reaches the
// real DNS by forgetting to inject one.
func New(r Resolver) *Checker {
	if r == nil {
		panic("inboundauth: a Resolver is required")
	}
	return &Checker{r: r}
}

// Evaluate runs SPF and DKIM concurrently (both wait on DNS), then DMARC,
// and decides the action. msg is read once, as a stream, by the DKIM
// verifier; it must be the message as received (before our own trace
// headers). The error is non-nil only if msg could not be read.
func (c *Checker) Evaluate(ctx context.Context, in Input, msg io.Reader) (*Verdict, error) {
	v := &Verdict{}
	var wg sync.WaitGroup
	wg.Go(func() { v.SPF = c.SPF(ctx, in.IP, in.Helo, in.MailFrom) })
	v.spfDomain = in.Helo
	if i := strings.LastIndexByte(in.MailFrom, '@'); i >= 0 {
		v.spfDomain = in.MailFrom[i+1:]
	}
	var err error
	v.DKIM, err = c.DKIM(ctx, msg)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	c.dmarc(ctx, in, v)
	return v, nil
}

// SPF checks whether ip may send for the MAIL FROM domain (the HELO domain
// for the null sender, RFC 7208 §2.4). The identities in the result are
// made safe for a header field; the check itself uses them as received.
func (c *Checker) SPF(ctx context.Context, ip net.IP, helo, mailFrom string) authres.SPFResult {
	res, err := spf.CheckHostWithSender(ip, helo, mailFrom, spf.WithResolver(c.r), spf.WithContext(ctx))
	r := authres.SPFResult{Value: authres.ResultValue(res), From: headerSafe(mailFrom), Helo: headerSafe(helo)}
	if mailFrom == "" {
		r.From = "postmaster@" + r.Helo // RFC 7208 §2.4, RFC 8601 §2.7.2
	}
	if err != nil && res != spf.None && res != spf.Pass && res != spf.Fail && res != spf.SoftFail && res != spf.Neutral {
		r.Reason = reason(err)
	}
	return r
}

// DKIM verifies the message's DKIM signatures, reading r as a stream.
// Only a read error (the message itself unavailable) is returned; a
// message whose header cannot be parsed is dkim=permerror.
func (c *Checker) DKIM(ctx context.Context, r io.Reader) ([]authres.DKIMResult, error) {
	cr := &errRecorder{r: r}
	verifs, err := dkim.VerifyWithOptions(cr, &dkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return c.r.LookupTXT(ctx, name) },
		MaxVerifications: maxDKIMSignatures,
	})
	if cr.err != nil {
		return nil, fmt.Errorf("dkim: read message: %w", cr.err)
	}
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return []authres.DKIMResult{{Value: authres.ResultPermError, Reason: reason(err)}}, nil
	}
	// dkim may stop reading early; the caller's stream needs no draining
	// (it is a spool), so nothing more to do here.
	out := make([]authres.DKIMResult, 0, len(verifs))
	for _, v := range verifs {
		r := authres.DKIMResult{Value: authres.ResultPass, Domain: v.Domain, Identifier: v.Identifier}
		switch {
		case v.Err == nil:
		case dkim.IsTempFail(v.Err):
			r.Value, r.Reason = authres.ResultTempError, reason(v.Err)
		case dkim.IsPermFail(v.Err):
			r.Value, r.Reason = authres.ResultPermError, reason(v.Err)
		default:
			r.Value, r.Reason = authres.ResultFail, reason(v.Err)
		}
		out = append(out, r)
	}
	return out, nil
}

// dmarc evaluates DMARC (RFC 7489) from the SPF and DKIM results in v and
// sets v.DMARC, v.Policy, v.Aligned and v.Action.
func (c *Checker) dmarc(ctx context.Context, in Input, v *Verdict) {
	domains := uniqueLower(in.FromDomains)
	switch len(domains) {
	case 0:
		// No author domain to look up a policy for or align with: the
		// message fails DMARC (RFC 7489 §6.6.1), whatever SPF says, rather
		// than passing unchecked.
		v.DMARC = authres.DMARCResult{Value: authres.ResultPermError, Reason: "no From domain"}
		v.Action, v.Why = Junk, "no usable From domain"
		return
	case 1:
	default:
		// RFC 7489 §6.6.1: a message cannot be checked against several
		// authors' policies at once; one of them may be a forgery.
		v.DMARC = authres.DMARCResult{Value: authres.ResultPermError, Reason: "several From domains"}
		v.Action, v.Why = Junk, "several From domains"
		return
	}
	from := domains[0]
	v.DMARC.From = headerSafe(from)
	org := OrgDomain(from)
	v.Aligned = c.aligned(v, from, org, dmarc.AlignmentRelaxed, dmarc.AlignmentRelaxed)

	rec, err := c.lookupDMARC(ctx, from)
	subdomain := false
	if errors.Is(err, dmarc.ErrNoPolicy) && org != from {
		rec, err = c.lookupDMARC(ctx, org) // RFC 7489 §6.6.3: fall back to the organisational domain
		subdomain = true
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		v.DMARC.Value = authres.ResultNone
		v.Action, v.Why = c.withoutDMARC(v, org)
		return
	case dmarc.IsTempFail(err) || isTemporary(err):
		v.DMARC.Value, v.DMARC.Reason = authres.ResultTempError, "record unavailable"
		v.Action, v.Why = TempFail, "DMARC record of "+from+" temporarily unavailable"
		return
	case err != nil:
		// An unparseable record states no policy we can apply.
		v.DMARC.Value, v.DMARC.Reason = authres.ResultPermError, "invalid record"
		v.Action, v.Why = c.withoutDMARC(v, org)
		return
	}
	v.Aligned = c.aligned(v, from, org, rec.SPFAlignment, rec.DKIMAlignment)
	if v.Aligned {
		v.DMARC.Value = authres.ResultPass
		v.Action, v.Why = Deliver, "dmarc pass"
		return
	}
	p := rec.Policy
	if subdomain && rec.SubdomainPolicy != "" {
		p = rec.SubdomainPolicy
	}
	if rec.Percent != nil && *rec.Percent < 100 {
		p = milder(p)
	}
	v.Policy = p
	v.DMARC.Value, v.DMARC.Reason = authres.ResultFail, "p="+string(p)
	switch p {
	case dmarc.PolicyReject:
		v.Action, v.Why = Reject, "DMARC policy of "+from+" rejects unauthenticated mail"
		if v.SPF.Value == authres.ResultTempError || anyDKIM(v.DKIM, authres.ResultTempError) {
			// The failure may be our DNS, not a forgery: let the sender retry.
			v.Action, v.Why = TempFail, "DMARC check of "+from+" incomplete"
		}
	case dmarc.PolicyQuarantine:
		v.Action, v.Why = Junk, "dmarc quarantine"
	default:
		v.Action, v.Why = Deliver, "dmarc fail, p=none"
	}
}

// withoutDMARC decides for a message whose From domain publishes no
// (usable) DMARC policy: an SPF fail is Junk unless a DKIM signature of the
// author's organisational domain (org; "" when unknown) passed, as for a
// legitimately forwarded message.
func (c *Checker) withoutDMARC(v *Verdict, org string) (Action, string) {
	if v.SPF.Value != authres.ResultFail {
		return Deliver, "no dmarc policy"
	}
	if org != "" {
		for _, d := range v.DKIM {
			if d.Value == authres.ResultPass && OrgDomain(d.Domain) == org {
				return Deliver, "spf fail, dkim pass"
			}
		}
	}
	return Junk, "spf fail without dmarc"
}

// aligned reports whether SPF or a DKIM signature passed for an identifier
// aligned with the From domain (RFC 7489 §3.1).
func (c *Checker) aligned(v *Verdict, from, org string, spfMode, dkimMode dmarc.AlignmentMode) bool {
	if v.SPF.Value == authres.ResultPass && alignedWith(v.spfDomain, from, org, spfMode) {
		return true
	}
	for _, d := range v.DKIM {
		if d.Value == authres.ResultPass && alignedWith(d.Domain, from, org, dkimMode) {
			return true
		}
	}
	return false
}

func (c *Checker) lookupDMARC(ctx context.Context, domain string) (*dmarc.Record, error) {
	return dmarc.LookupWithOptions(domain, &dmarc.LookupOptions{
		LookupTXT: func(name string) ([]string, error) { return c.r.LookupTXT(ctx, name) },
	})
}

// OrgDomain returns the organisational domain of d (RFC 7489 §3.2): the
// public suffix plus one label, or d itself when it has none (an IP, a
// public suffix, a single label).
func OrgDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

func alignedWith(id, from, org string, mode dmarc.AlignmentMode) bool {
	id = strings.ToLower(strings.TrimSuffix(id, "."))
	if id == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return id == from
	}
	return OrgDomain(id) == org
}

// headerSafe replaces what could break an Authentication-Results field or
// its parsing (a quoted MAIL FROM local part may hold ";", quotes,
// parentheses, 8-bit bytes) in a client-supplied identity.
func headerSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || strings.ContainsRune(`";()\<>`, r) {
			return '_'
		}
		return r
	}, s)
	if len(s) > 255 {
		s = s[:255]
	}
	return s
}

func milder(p dmarc.Policy) dmarc.Policy {
	switch p {
	case dmarc.PolicyReject:
		return dmarc.PolicyQuarantine
	case dmarc.PolicyQuarantine:
		return dmarc.PolicyNone
	}
	return p
}

func anyDKIM(rs []authres.DKIMResult, v authres.ResultValue) bool {
	for _, r := range rs {
		if r.Value == v {
			return true
		}
	}
	return false
}

func uniqueLower(ds []string) []string {
	var out []string
	for _, d := range ds {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

func isTemporary(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && (de.IsTemporary || de.IsTimeout)
}

// reason turns an error into an Authentication-Results reason: short, and
// without ";" (which would split the field when parsed back).
func reason(err error) string {
	s := strings.TrimPrefix(err.Error(), "dkim: ")
	s = strings.NewReplacer(";", ",", "\r", " ", "\n", " ", `"`, "'").Replace(s)
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

// errRecorder remembers a read error so it can be told apart from the
// verifier's own parse errors.
type errRecorder struct {
	r   io.Reader
	err error
}

func (c *errRecorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		c.err = err
	}
	return n, err
}
