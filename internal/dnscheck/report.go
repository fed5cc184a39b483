package dnscheck

import (
	"fmt"
	"io"
	"maps"
	"slices"
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
	// counts by status, for the summary line
	counts := map[string]int{}
	fmt.Fprintf(tw, "DNS records for %s\n", domain)
	for _, r := range append(recs, reverse...) {
		counts[string(r.Status)]++
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
		counts[status]++
		fmt.Fprintf(tw, "  %s\t%s\t%s:%d\t%s\n", status, e.Service, e.Host, e.Port, what)
	}
	if len(docs) > 0 {
		fmt.Fprintf(tw, "\nWeb documents\n")
	}
	for _, d := range docs {
		counts[string(d.Status)]++
		where, _, _ := strings.Cut(d.URL, "?")
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", d.Status, d.Name, where, d.Detail)
	}
	if err := tw.Flush(); err != nil {
		return 0, err
	}
	// One summary line: every status with its count, ok first.
	parts := []string{fmt.Sprintf("%d ok", counts["ok"])}
	for _, st := range slices.Sorted(maps.Keys(counts)) {
		if st != "ok" {
			problems += counts[st]
			parts = append(parts, fmt.Sprintf("%d %s", counts[st], st))
		}
	}
	summary := "Summary: " + strings.Join(parts, ", ")
	if problems == 0 {
		summary += ". Everything looks right."
	} else {
		summary += fmt.Sprintf(": %d problem(s). 'mailstack dns %s' prints the records to publish.", problems, domain)
	}
	_, err = fmt.Fprintf(w, "\n%s\n", summary)
	return problems, err
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
