package dnscheck

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// CertWarnBefore is how close to expiry a certificate is reported as a
// problem: ACME renews 30 days ahead, so less than 14 left means renewal
// is failing.
const CertWarnBefore = 14 * 24 * time.Hour

// WriteReport prints the doctor's findings and returns the number of
// problems (anything not ok).
func WriteReport(w io.Writer, domain string, recs, reverse []Result, eps []EndpointResult, docs []DocumentResult, now time.Time) (problems int, err error) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "DNS records for %s\n", domain)
	for _, r := range append(recs, reverse...) {
		if r.Status != OK {
			problems++
		}
		name := r.Record.Name
		if r.Record.Kind != "" {
			name += " (" + string(r.Record.Kind) + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Status, r.Record.Type, name, describe(r))
	}
	fmt.Fprintf(tw, "\nPorts and certificates\n")
	for _, e := range eps {
		status, what := "ok", ""
		switch {
		case !e.Answered:
			status, what = "no answer", e.Err.Error()
		case e.Err != nil:
			status, what = "error", e.Err.Error()
		case e.TLS == Plain:
			what = "answers"
		case !e.Verified:
			status = "bad cert"
			what = fmt.Sprintf("certificate for %s, until %s: %v", strings.Join(e.Names, ","), e.NotAfter.Format(time.DateOnly), e.VerifyErr)
		default:
			left := e.NotAfter.Sub(now)
			what = fmt.Sprintf("certificate valid until %s (%d days)", e.NotAfter.Format(time.DateOnly), int(left.Hours()/24))
			if left < CertWarnBefore {
				status = "expiring"
			}
		}
		if status != "ok" {
			problems++
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s:%d\t%s\n", status, e.Service, e.Host, e.Port, what)
	}
	if len(docs) > 0 {
		fmt.Fprintf(tw, "\nWeb documents\n")
	}
	for _, d := range docs {
		if d.Status != OK {
			problems++
		}
		where, _, _ := strings.Cut(d.URL, "?")
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", d.Status, d.Name, where, d.Detail)
	}
	if problems == 0 {
		fmt.Fprintf(tw, "\nEverything looks right.\n")
	} else {
		fmt.Fprintf(tw, "\n%d problem(s). 'mailstack dns %s' prints the records to publish.\n", problems, domain)
	}
	return problems, tw.Flush()
}

func describe(r Result) string {
	want := r.Record.RData()
	switch r.Record.Type {
	case A:
		want = "an A (and AAAA) record with the server's public address"
	case "PTR":
		want = r.Record.Value + " (ask your ISP)"
	}
	found := strings.Join(r.Found, " | ")
	var s string
	switch r.Status {
	case OK:
		s = found
	case Missing:
		s = "publish: " + want
	case Different:
		s = "want: " + want + "; found: " + found
	default:
		s = "lookup failed"
	}
	if r.Detail != "" {
		s += " (" + r.Detail + ")"
	}
	return s
}
