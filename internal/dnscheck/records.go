// Package dnscheck knows every DNS record a mailstack domain needs: it
// lists them for publishing (`mailstack dns`) and looks them up to report
// which are right, missing or different, along with certificate expiry,
// which ports answer, and whether the MTA-STS policy and autoconfig file
// served over HTTPS say what they should (`mailstack doctor`).
package dnscheck

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/mtasts"
)

// Record types used.
const (
	MX    = "MX"
	TXT   = "TXT"
	SRV   = "SRV"
	CNAME = "CNAME"
	A     = "A" // the host name's own address; its value is not known here
)

// Kind says how a TXT record is recognised and compared.
type Kind string

// TXT record kinds.
const (
	KindSPF    Kind = "SPF"
	KindDKIM   Kind = "DKIM"
	KindDMARC  Kind = "DMARC"
	KindMTASTS Kind = "MTA-STS"
	KindTLSRPT Kind = "TLS-RPT"
)

// Record is one record to publish.
type Record struct {
	Name string // fully qualified, without the trailing dot
	Type string
	Kind Kind // for TXT records
	// Value is the TXT text, or the MX, SRV or CNAME target host name.
	Value string
	// Preference (MX) or Priority and Weight (SRV), and Port (SRV).
	Priority, Weight, Port int
	// Why is a one-line explanation printed above the record.
	Why string
}

// Params describe the domain and the server.
type Params struct {
	Domain       string
	Hostname     string
	DKIMSelector string
	DKIMRecord   string // from dkimkey.TXTRecord
	MTASTS       mtasts.Policy
	Clients      clientconf.Config
	// ReportTo receives DMARC and TLS-RPT reports; empty: postmaster@Domain.
	ReportTo string
}

// Expected returns every record the domain needs, in the order they are
// printed.
func Expected(p Params) []Record {
	d, host := lower(p.Domain), lower(p.Hostname)
	report := p.ReportTo
	if report == "" {
		report = "postmaster@" + d
	}
	imapHost, smtpHost := p.Clients.IMAPHost(d), p.Clients.SMTPHost(d)
	recs := []Record{
		{Name: host, Type: A, Why: "the server itself: A (and AAAA, if you have IPv6) records with your public address"},
		{Name: d, Type: MX, Priority: 10, Value: host, Why: "where other servers deliver mail for " + d},
		{Name: d, Type: TXT, Kind: KindSPF, Value: "v=spf1 mx -all",
			Why: "SPF: only the MX host sends mail for " + d + " (add include:<relay's SPF domain> if you send through MAILSTACK_RELAY)"},
		{Name: p.DKIMSelector + "._domainkey." + d, Type: TXT, Kind: KindDKIM, Value: p.DKIMRecord,
			Why: "DKIM: the public key that verifies mailstack's signatures"},
		{Name: "_dmarc." + d, Type: TXT, Kind: KindDMARC, Value: "v=DMARC1; p=quarantine; rua=mailto:" + report,
			Why: "DMARC: receivers quarantine mail that fails SPF and DKIM alignment, and report to " + report},
		{Name: "_mta-sts." + d, Type: TXT, Kind: KindMTASTS, Value: p.MTASTS.TXT(),
			Why: "MTA-STS: senders fetch https://mta-sts." + d + "/.well-known/mta-sts.txt (mode " + string(p.MTASTS.Mode) + ") and insist on TLS"},
		{Name: "_smtp._tls." + d, Type: TXT, Kind: KindTLSRPT, Value: "v=TLSRPTv1; rua=mailto:" + report,
			Why: "TLS-RPT: senders report TLS delivery problems to " + report},
	}
	// RFC 6186 service records, with RFC 8314's preference for implicit
	// TLS; services not offered are published with target "." so clients
	// do not probe for them.
	srv := func(name string, port int, target, why string) {
		if port == 0 {
			recs = append(recs, Record{Name: name + "." + d, Type: SRV, Value: ".", Why: why + ": not offered"})
			return
		}
		recs = append(recs, Record{Name: name + "." + d, Type: SRV, Priority: 0, Weight: 1, Port: port, Value: target, Why: why})
	}
	srv("_imaps._tcp", p.Clients.IMAPPort, imapHost, "IMAP over TLS, for clients that look up RFC 6186 records")
	srv("_submissions._tcp", p.Clients.SubmissionsPort, smtpHost, "SMTP submission over TLS")
	srv("_submission._tcp", p.Clients.SubmissionPort, smtpHost, "SMTP submission with STARTTLS")
	srv("_imap._tcp", p.Clients.IMAPStartTLSPort, imapHost, "IMAP with STARTTLS")
	srv("_pop3._tcp", 0, "", "POP3")
	srv("_pop3s._tcp", 0, "", "POP3 over TLS")
	srv("_autodiscover._tcp", 443, "autodiscover."+d, "Outlook autodiscover")
	for _, n := range []struct{ prefix, why string }{
		{"imap", "IMAP host name for clients"},
		{"smtp", "submission host name for clients"},
		{"mta-sts", "serves the MTA-STS policy (HTTPS)"},
		{"autoconfig", "Thunderbird autoconfiguration"},
		{"autodiscover", "Outlook autodiscover"},
	} {
		name := n.prefix + "." + d
		if name == host {
			continue
		}
		recs = append(recs, Record{Name: name, Type: CNAME, Value: host, Why: n.why + " (a CNAME, or A/AAAA records with the server's address)"})
	}
	return recs
}

func lower(s string) string { return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), ".")) }

func fqdn(s string) string {
	if s == "." {
		return s
	}
	return s + "."
}

// RData returns the record's data in zone-file syntax.
func (r Record) RData() string {
	switch r.Type {
	case MX:
		return fmt.Sprintf("%d %s", r.Priority, fqdn(r.Value))
	case SRV:
		return fmt.Sprintf("%d %d %d %s", r.Priority, r.Weight, r.Port, fqdn(r.Value))
	case CNAME:
		return fqdn(r.Value)
	case TXT:
		return quoteTXT(r.Value)
	case A:
		return "<your public IPv4 address>"
	}
	return r.Value
}

// quoteTXT splits a value into quoted strings of at most 255 bytes, the
// limit of one DNS character-string; resolvers join them again.
func quoteTXT(v string) string {
	var parts []string
	for len(v) > 255 {
		parts = append(parts, strconv.Quote(v[:255]))
		v = v[255:]
	}
	parts = append(parts, strconv.Quote(v))
	return strings.Join(parts, " ")
}

// WriteZone prints records in zone-file syntax with a comment above each,
// ready to paste into a DNS provider's zone or import form. The host
// name's A record is printed as a comment, since its address is not known.
func WriteZone(w io.Writer, domain string, recs []Record, ttl int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "; DNS records for %s (generated by mailstack; check them with 'mailstack doctor %s')\n", domain, domain)
	for _, r := range recs {
		fmt.Fprintf(&b, "\n; %s\n", r.Why)
		if r.Type == A {
			fmt.Fprintf(&b, "; %s %d IN A %s\n", fqdn(r.Name), ttl, r.RData())
			fmt.Fprintf(&b, "; and ask your ISP to set the reverse DNS (PTR) of that address to %s\n", r.Name)
			continue
		}
		fmt.Fprintf(&b, "%s %d IN %s %s\n", fqdn(r.Name), ttl, r.Type, r.RData())
	}
	_, err := io.WriteString(w, b.String())
	return err
}
