package mailaddr_test

import (
	"errors"
	"testing"

	"github.com/mailstack/mailstack/internal/mailaddr"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		// want is Local "@" Domain; "" means ErrSyntax.
		local, domain string
		key, base     string // Key and Base().Key()
		plain         bool
	}{
		{name: "plain", in: "bob@example.org", local: "bob", domain: "example.org", key: "bob@example.org", base: "bob@example.org", plain: true},
		{name: "white space around", in: " \tbob@example.org \r\n", local: "bob", domain: "example.org", key: "bob@example.org", base: "bob@example.org", plain: true},
		{name: "uppercase", in: "Bob.Smith@Example.ORG", local: "Bob.Smith", domain: "example.org", key: "bob.smith@example.org", base: "bob.smith@example.org", plain: true},
		{name: "trailing dot", in: "bob@example.org.", local: "bob", domain: "example.org", key: "bob@example.org", base: "bob@example.org", plain: true},
		{name: "IDN folded, not converted", in: "Jörg@BÜCHER.example", local: "Jörg", domain: "bücher.example", key: "jörg@bücher.example", base: "jörg@bücher.example", plain: true},
		{name: "A-label kept", in: "a@XN--BCHER-KVA.example", local: "a", domain: "xn--bcher-kva.example", key: "a@xn--bcher-kva.example", base: "a@xn--bcher-kva.example", plain: true},
		{name: "subaddress", in: "Bob+Lists@example.org", local: "Bob+Lists", domain: "example.org", key: "bob+lists@example.org", base: "bob@example.org", plain: true},
		{name: "two plus signs", in: "bob+a+b@example.org", local: "bob+a+b", domain: "example.org", key: "bob+a+b@example.org", base: "bob@example.org", plain: true},
		{name: "leading plus is no subaddress", in: "+tag@example.org", local: "+tag", domain: "example.org", key: "+tag@example.org", base: "+tag@example.org", plain: true},
		// go-smtp hands "a@b"@example.org over unquoted: the domain is
		// after the last @, the rest is the local part.
		{name: "second @ (unquoted quoted local part)", in: "victim@elsewhere.example@example.org", local: "victim@elsewhere.example", domain: "example.org", key: "victim@elsewhere.example@example.org", base: "victim@elsewhere.example@example.org"},
		{name: "quoted local part as written", in: `"bob smith"@example.org`, local: `"bob smith"`, domain: "example.org", key: `"bob smith"@example.org`, base: `"bob smith"@example.org`},
		{name: "space in local part", in: "bob smith@example.org", local: "bob smith", domain: "example.org", key: "bob smith@example.org", base: "bob smith@example.org"},
		{name: "angle brackets", in: "<bob@example.org>", local: "<bob", domain: "example.org>", key: "<bob@example.org>", base: "<bob@example.org>"},
		{name: "domain literal", in: "bob@[192.0.2.1]", local: "bob", domain: "[192.0.2.1]", key: "bob@[192.0.2.1]", base: "bob@[192.0.2.1]", plain: true},
		{name: "no @", in: "bob.example.org"},
		{name: "empty", in: ""},
		{name: "empty local part", in: "@example.org"},
		{name: "empty domain", in: "bob@"},
		{name: "only a dot for domain", in: "bob@."},
		{name: "only @", in: "@"},
		{name: "control character", in: "bo\x01b@example.org"},
		{name: "tab inside", in: "bob\t@example.org"},
		{name: "line break inside", in: "bob@exa\r\nmple.org"},
		{name: "DEL", in: "bob@example.org\x7f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := mailaddr.Parse(tc.in)
			if tc.domain == "" {
				if !errors.Is(err, mailaddr.ErrSyntax) {
					t.Fatalf("Parse(%q) = %+v, %v; want ErrSyntax", tc.in, a, err)
				}
				if d := mailaddr.DomainOf(tc.in); d != "" {
					t.Errorf("DomainOf(%q) = %q, want empty", tc.in, d)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if a.Local != tc.local || a.Domain != tc.domain {
				t.Errorf("Parse(%q) = %q @ %q, want %q @ %q", tc.in, a.Local, a.Domain, tc.local, tc.domain)
			}
			if got := a.Key(); got != tc.key {
				t.Errorf("Key = %q, want %q", got, tc.key)
			}
			if got := mailaddr.Key(tc.in); got != tc.key {
				t.Errorf("mailaddr.Key(%q) = %q, want %q", tc.in, got, tc.key)
			}
			if got := a.Base().Key(); got != tc.base {
				t.Errorf("Base = %q, want %q", got, tc.base)
			}
			if a.Tagged() != (tc.base != tc.key) {
				t.Errorf("Tagged = %v", a.Tagged())
			}
			if got := a.Plain(); got != tc.plain {
				t.Errorf("Plain = %v, want %v", got, tc.plain)
			}
			if got := mailaddr.DomainOf(tc.in); got != tc.domain {
				t.Errorf("DomainOf = %q, want %q", got, tc.domain)
			}
			if got := a.String(); got != tc.local+"@"+tc.domain {
				t.Errorf("String = %q", got)
			}
		})
	}
}

func TestDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.org":           "example.org",
		" Example.ORG. ":        "example.org",
		"BÜCHER.example":        "bücher.example",
		"example.org..":         "example.org.",
		"":                      "",
		".":                     "",
		"xn--bcher-kva.EXAMPLE": "xn--bcher-kva.example",
	} {
		if got := mailaddr.Domain(in); got != want {
			t.Errorf("Domain(%q) = %q, want %q", in, got, want)
		}
	}
}
