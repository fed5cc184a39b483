package searchtext

import (
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mailstack/mailstack/internal/headerscan"
	"github.com/mailstack/mailstack/internal/mimeindex"
)

// Field is one top-level header field as search sees it: Name lower-cased,
// the raw value unfolded; Value and Addresses decode and case-fold it on
// first use (most searches look at one or two fields of each message).
type Field struct {
	Name     string // lower-cased
	raw      []byte
	folded   string
	done     bool
	addrs    string
	addrDone bool
}

// Value returns the field's value unfolded, RFC 2047-decoded, trimmed and
// case-folded: what HEADER and SUBJECT match.
func (f *Field) Value() string {
	if !f.done {
		f.folded, f.done = Fold(mimeindex.DecodeWords(strings.TrimSpace(latin1Fallback(f.raw)))), true
	}
	return f.folded
}

// Addresses returns the field as an address list in the normalized form
// that FROM, TO, CC and BCC match, decoded and case-folded. The parser is
// the one behind ENVELOPE, so a search finds what FETCH ENVELOPE shows.
func (f *Field) Addresses() string {
	if !f.addrDone {
		l := mimeindex.ParseAddressList(latin1Fallback(f.raw))
		f.addrs, f.addrDone = Fold(mimeindex.DecodeWords(mimeindex.FormatAddressList(l))), true
	}
	return f.addrs
}

// ParseHeader splits a raw header block into fields (headerscan): lines
// that are not a field are skipped; 8-bit bytes that are not UTF-8 are
// read as ISO-8859-1.
func ParseHeader(raw []byte) []Field {
	var out []Field
	for s := headerscan.NewScanner(raw); s.Next(); {
		if f := s.Field(); f.IsField() {
			out = append(out, Field{Name: strings.ToLower(string(f.Name)), raw: slices.Clip(headerscan.Unfold(f.Value))})
		}
	}
	return out
}

// IsAddressField reports whether the FROM, TO, CC or BCC search key names
// the (lower-case) field: those match the normalized address list.
func IsAddressField(name string) bool {
	return name == "from" || name == "to" || name == "cc" || name == "bcc"
}

func latin1Fallback(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			sb.WriteRune(rune(b[i]))
			i++
			continue
		}
		sb.WriteRune(r)
		i += n
	}
	return sb.String()
}
