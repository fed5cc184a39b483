package dnscheck

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailstack/mailstack/internal/clientconf"
	"github.com/mailstack/mailstack/internal/mtasts"
)

// maxDocument bounds what is read of a fetched document: RFC 8461 §3.3
// lets senders stop at 64 KiB for the MTA-STS policy, and an autoconfig
// file is far smaller.
const maxDocument = 64 << 10

// Document is a file that other mail servers or mail clients fetch over
// HTTPS, and how to tell whether what is served is right.
type Document struct {
	Name string // "MTA-STS policy", "autoconfig"
	URL  string
	// compare judges the fetched body.
	compare func(header http.Header, body []byte) (Status, string)
	// noRedirects: the fetcher must not follow redirects (MTA-STS).
	noRedirects bool
}

// DocumentResult is what fetching one document showed.
type DocumentResult struct {
	Document
	Status Status
	Detail string
}

// Documents lists the web documents of a domain: the MTA-STS policy, which
// senders fetch before they trust the _mta-sts record (and without which
// an "enforce" record makes mail to the domain fail), and Thunderbird's
// autoconfig file.
func Documents(p Params) []Document {
	d := lower(p.Domain)
	return []Document{
		{
			Name: "MTA-STS policy", URL: "https://mta-sts." + d + "/.well-known/mta-sts.txt",
			compare: func(h http.Header, body []byte) (Status, string) { return comparePolicy(p.MTASTS, h, body) }, noRedirects: true,
		},
		{
			Name: "autoconfig", URL: "https://autoconfig." + d + "/mail/config-v1.1.xml?emailaddress=" + url.QueryEscape("postmaster@"+d),
			compare: func(_ http.Header, body []byte) (Status, string) { return compareAutoconfig(p, body) },
		},
	}
}

// CheckDocuments fetches every document (host names resolved with the
// checker's resolver, certificates verified against o.RootCAs, as the
// fetching sender or client would) and compares it with what it should be.
func (c *Checker) CheckDocuments(ctx context.Context, docs []Document, o ProbeOptions) []DocumentResult {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	d := &net.Dialer{Resolver: c.resolver()}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			return conn, c.Named(err)
		},
		TLSClientConfig: &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
	}
	defer tr.CloseIdleConnections()
	out := make([]DocumentResult, len(docs))
	done := make(chan struct{})
	for i, doc := range docs {
		go func() {
			out[i] = fetch(ctx, tr, doc, o.Timeout)
			done <- struct{}{}
		}()
	}
	for range docs {
		<-done
	}
	return out
}

func fetch(ctx context.Context, tr *http.Transport, doc Document, timeout time.Duration) DocumentResult {
	r := DocumentResult{Document: doc, Status: Failed}
	client := &http.Client{Transport: tr, Timeout: timeout}
	if doc.noRedirects {
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, doc.URL, nil)
	if err != nil {
		r.Detail = err.Error()
		return r
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is printed next to it already
		}
		r.Detail = err.Error()
		return r
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		r.Status, r.Detail = Missing, "HTTP 404"
		return r
	case resp.StatusCode >= 300 && resp.StatusCode < 400 && doc.noRedirects:
		r.Detail = fmt.Sprintf("HTTP %d redirect to %s; senders do not follow redirects (RFC 8461 §3.3)", resp.StatusCode, resp.Header.Get("Location"))
		return r
	case resp.StatusCode != http.StatusOK:
		r.Detail = "HTTP " + resp.Status
		return r
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		r.Detail = err.Error()
		return r
	}
	if len(body) > maxDocument {
		r.Detail = fmt.Sprintf("larger than %d bytes", maxDocument)
		return r
	}
	r.Status, r.Detail = doc.compare(resp.Header, body)
	return r
}

// comparePolicy compares a served MTA-STS policy with want, field by
// field, as senders parse it (RFC 8461 §3.2: "key: value" lines, CRLF or
// LF, mx repeatable, order free).
func comparePolicy(want mtasts.Policy, h http.Header, body []byte) (Status, string) {
	if mt, _, err := mime.ParseMediaType(h.Get("Content-Type")); err != nil || mt != "text/plain" {
		return Different, fmt.Sprintf("Content-Type %q, want text/plain", h.Get("Content-Type"))
	}
	got := parsePolicy(string(body))
	exp := parsePolicy(want.String())
	var diffs []string
	for _, k := range []string{"version", "mode", "mx", "max_age"} {
		g, e := slices.Sorted(slices.Values(got[k])), slices.Sorted(slices.Values(exp[k]))
		if !slices.Equal(g, e) {
			diffs = append(diffs, fmt.Sprintf("%s %s, want %s", k, listOrNone(g), strings.Join(e, ",")))
		}
	}
	if len(diffs) > 0 {
		return Different, strings.Join(diffs, "; ")
	}
	return OK, "mode " + string(want.Mode) + ", mx " + strings.Join(want.MX, ",")
}

func parsePolicy(s string) map[string][]string {
	m := map[string][]string{}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if ok {
			m[strings.TrimSpace(k)] = append(m[strings.TrimSpace(k)], strings.ToLower(strings.TrimSpace(v)))
		}
	}
	return m
}

func listOrNone(v []string) string {
	if len(v) == 0 {
		return "missing"
	}
	return strings.Join(v, ",")
}

// compareAutoconfig checks that the served file offers exactly the
// servers the configuration does.
func compareAutoconfig(p Params, body []byte) (Status, string) {
	var f clientconf.ClientConfig
	if err := xml.Unmarshal(body, &f); err != nil {
		return Different, "not an autoconfig file: " + err.Error()
	}
	var got, want []string
	for _, s := range append(f.Provider.Incoming, f.Provider.Outgoing...) {
		got = append(got, s.Type+" "+net.JoinHostPort(strings.ToLower(s.Hostname), strconv.Itoa(s.Port))+" "+s.SocketType)
	}
	d := lower(p.Domain)
	for _, s := range append(p.Clients.IMAP(d), p.Clients.SMTP(d)...) {
		want = append(want, s.Protocol+" "+net.JoinHostPort(s.Host, strconv.Itoa(s.Port))+" "+string(s.Security))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		if len(got) == 0 {
			got = []string{"none"}
		}
		return Different, "servers " + strings.Join(got, ", ") + "; want " + strings.Join(want, ", ")
	}
	return OK, fmt.Sprintf("%d servers", len(got))
}
