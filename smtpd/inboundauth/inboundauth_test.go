package inboundauth

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
)

// mapResolver answers TXT queries from a map; "TEMP" as the only record
// makes the lookup fail temporarily.
type mapResolver map[string]string

func (m mapResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	v, ok := m[strings.TrimSuffix(name, ".")]
	switch {
	case !ok:
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	case v == "TEMP":
		return nil, &net.DNSError{Err: "timeout", Name: name, IsTimeout: true, IsTemporary: true}
	}
	return []string{v}, nil
}

func (mapResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (mapResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (mapResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

func TestOrgDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":           "example.com",
		"Mail.News.Example.COM": "example.com",
		"a.b.example.co.uk":     "example.co.uk",
		"example.com.":          "example.com",
		"co.uk":                 "co.uk", // a public suffix is its own
		"localhost":             "localhost",
		"sub.sender.example":    "sender.example", // unlisted TLD: default rule
	} {
		if got := OrgDomain(in); got != want {
			t.Errorf("OrgDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEvaluateTemporary: DNS trouble never turns into a permanent refusal.
func TestEvaluateTemporary(t *testing.T) {
	msg := "DKIM-Signature: v=1; a=rsa-sha256; d=reject.example; s=sel; h=From; bh=AAAA; b=AAAA\r\nFrom: a@reject.example\r\n\r\nhi\r\n"
	for _, tc := range []struct {
		name string
		dns  mapResolver
		want Action
	}{
		{"dkim key unavailable under p=reject", mapResolver{"_dmarc.reject.example": "v=DMARC1; p=reject", "sel._domainkey.reject.example": "TEMP"}, TempFail},
		{"spf unavailable under p=reject", mapResolver{"_dmarc.reject.example": "v=DMARC1; p=reject", "reject.example": "TEMP"}, TempFail},
		{"dmarc record unavailable", mapResolver{"_dmarc.reject.example": "TEMP"}, TempFail},
		{"no key, no temp error: reject", mapResolver{"_dmarc.reject.example": "v=DMARC1; p=reject"}, Reject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(tc.dns).Evaluate(context.Background(), Input{
				IP: net.ParseIP("192.0.2.7"), Helo: "client.example", MailFrom: "a@reject.example", FromDomains: []string{"reject.example"},
			}, strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			if v.Action != tc.want {
				t.Errorf("action %v (%s), want %v; spf=%s dkim=%+v dmarc=%s", v.Action, v.Why, tc.want, v.SPF.Value, v.DKIM, v.DMARC.Value)
			}
			id, res, err := authres.Parse(strings.TrimPrefix(strings.TrimSuffix(v.Header("mx.test"), "\r\n"), "Authentication-Results: "))
			if err != nil || id != "mx.test" || len(res) != 3 {
				t.Errorf("header does not parse back: %q %v %v", id, res, err)
			}
		})
	}
}
