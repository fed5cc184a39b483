// Package mailaddr is mailstack's one reading of an e-mail address as SMTP
// commands, the CLI and the web forms carry it: "local@domain", without
// angle brackets or a display name, a quoted local part already unquoted
// (go-smtp does that for MAIL and RCPT). Header fields are parsed
// elsewhere (mimeindex, go-message); their addresses come here as strings.
//
// The rule, the same for every caller:
//   - white space around the address is ignored;
//   - the domain is what follows the last '@' (RFC 5321 §4.1.2: a domain
//     never holds '@', a quoted local part may), lower-cased, one trailing
//     '.' (a root-qualified name) removed. Domains are compared as written
//     after case folding: no IDNA conversion, so "bücher.example" and its
//     A-label "xn--bcher-kva.example" are different domains;
//   - the local part is what precedes it, kept as written in Local (a
//     remote server's local parts may be case-sensitive, RFC 5321 §2.4);
//     mailstack's own addresses are case-insensitive, so Key folds it;
//   - neither part may be empty or hold a control character (which no
//     address may, quoted or not);
//   - a subaddress "+tag" starts at the first '+' of the local part, unless
//     that is its first character (Base).
//
// Which characters a caller accepts beyond that is its policy: Plain says
// whether an address can name an account or alias here.
package mailaddr

import (
	"errors"
	"strings"
)

// ErrSyntax is the error of an address that is not local@domain.
var ErrSyntax = errors.New("not an address of the form user@domain")

// Addr is an address split into its local part and its domain.
type Addr struct {
	// Local is the local part as written (surrounding white space removed).
	Local string
	// Domain is the domain, lower-cased, without a trailing dot.
	Domain string
}

// Parse splits s into local part and domain by the package's rule.
func Parse(s string) (Addr, error) {
	s = strings.TrimSpace(s)
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Addr{}, ErrSyntax
	}
	a := Addr{Local: s[:at], Domain: Domain(s[at+1:])}
	if a.Local == "" || a.Domain == "" || hasControl(s) {
		return Addr{}, ErrSyntax
	}
	return a, nil
}

// Domain returns a domain name as the package compares it: surrounding
// white space and one trailing dot removed, lower-cased.
func Domain(s string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
}

// Key returns the address as mailstack stores and compares its own
// addresses: local part and domain lower-cased.
func (a Addr) Key() string { return strings.ToLower(a.Local) + "@" + a.Domain }

// String returns the address with the local part as written, the form a
// remote recipient is sent to.
func (a Addr) String() string { return a.Local + "@" + a.Domain }

// Base returns the address without its subaddress: the local part up to
// its first '+'. A local part that starts with '+' has no subaddress (an
// empty base would read as a domain's catch-all "@domain").
func (a Addr) Base() Addr {
	if i := strings.IndexByte(a.Local, '+'); i > 0 {
		a.Local = a.Local[:i]
	}
	return a
}

// Tagged reports whether the address has a subaddress (Base differs).
func (a Addr) Tagged() bool { return strings.IndexByte(a.Local, '+') > 0 }

// Plain reports whether the address can name an account or alias here:
// no white space, '<', '>', '"' or second '@' (a quoted local part).
func (a Addr) Plain() bool {
	return !strings.ContainsAny(a.Local, " @<>\"") && !strings.ContainsAny(a.Domain, " <>\"")
}

// Key returns s as Parse and Addr.Key read it, for looking an address up;
// a string that is no address is only trimmed and lower-cased (it matches
// nothing).
func Key(s string) string {
	if a, err := Parse(s); err == nil {
		return a.Key()
	}
	return strings.ToLower(strings.TrimSpace(s))
}

// DomainOf returns the domain of an address, "" if s is no address.
func DomainOf(s string) string {
	a, err := Parse(s)
	if err != nil {
		return ""
	}
	return a.Domain
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return true
		}
	}
	return false
}
