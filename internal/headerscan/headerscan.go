// Package headerscan splits a raw RFC 5322 header block into its fields,
// byte-exactly and leniently: every byte of the block belongs to one field
// or to the rest after the header, so callers can rewrite a header keeping
// what they do not touch as received, and a malformed line is skipped
// rather than ending the header.
//
// It is the one header splitter of mailstack: the MIME indexer, search and
// its text index, FETCH HEADER.FIELDS and the SMTP header rewrites all read
// fields through it, so they agree on where a field starts and ends.
// go-message's textproto.ReadHeader is not used because it stops at the
// first malformed line and keeps no offsets.
package headerscan

import (
	"bytes"
	"strings"
)

// Field is one field of a header block: a line that does not start with
// white space plus the continuation lines (starting with a space or a tab)
// that follow it.
type Field struct {
	// Raw is the field exactly as in the block, line breaks included.
	Raw []byte
	// Name is what precedes the colon on the first line, white space
	// before the colon removed (RFC 5322 §4.5 obsolete syntax); nil when
	// the lines are not a field: no colon on the first line, nothing before
	// it, or continuation lines at the very start of the block.
	Name []byte
	// Value is everything after the colon, folding and the last line
	// break included.
	Value []byte
}

// IsField reports whether f has a name.
func (f Field) IsField() bool { return f.Name != nil }

// Is reports whether the field is called name, ignoring ASCII case.
func (f Field) Is(name string) bool {
	if f.Name == nil || len(f.Name) != len(name) {
		return false
	}
	for i := range len(name) {
		if lowerASCII(f.Name[i]) != lowerASCII(name[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Scanner reads the fields of a header block one at a time. The zero
// value reads nothing; use NewScanner. A Scanner is a value, so scanning
// allocates nothing.
type Scanner struct {
	rest  []byte
	field Field
}

// NewScanner returns a scanner of the header block, which may hold the
// body after it (the scanner stops at the blank line).
func NewScanner(block []byte) Scanner { return Scanner{rest: block} }

// Next advances to the next field. It returns false at the blank line
// ending the header (exactly LF or CRLF, the line that makes the MIME
// indexer start the body) or at the end of the block.
func (s *Scanner) Next() bool {
	h := s.rest
	if len(h) == 0 || h[0] == '\n' || len(h) >= 2 && h[0] == '\r' && h[1] == '\n' {
		s.field = Field{}
		return false
	}
	// The first line, then the continuation lines that follow it.
	first := lineEnd(h, 0)
	n := first
	for n < len(h) && (h[n] == ' ' || h[n] == '\t') {
		n = lineEnd(h, n)
	}
	s.field = Field{Raw: h[:n:n]}
	s.rest = h[n:]
	if h[0] == ' ' || h[0] == '\t' {
		return true // continuation lines with no field before them
	}
	colon := bytes.IndexByte(h[:first], ':')
	if colon < 0 {
		return true
	}
	name := bytes.TrimRight(h[:colon], " \t")
	if len(name) == 0 {
		return true
	}
	s.field.Name, s.field.Value = name[:len(name):len(name)], h[colon+1:n:n]
	return true
}

// lineEnd returns the offset after the line starting at i (after its LF,
// or the end of h).
func lineEnd(h []byte, i int) int {
	if j := bytes.IndexByte(h[i:], '\n'); j >= 0 {
		return i + j + 1
	}
	return len(h)
}

// Field returns the field Next advanced to. Its slices point into the
// block.
func (s *Scanner) Field() Field { return s.field }

// Rest returns what follows the fields read so far; once Next has
// returned false, the blank line ending the header (if there is one) and
// whatever follows it.
func (s *Scanner) Rest() []byte { return s.rest }

// Unfold returns v without its line breaks (CRLF or LF), the white space
// of folding kept (RFC 5322 §2.2.3). A value on one line is returned as a
// slice of v; only a folded one is copied.
func Unfold(v []byte) []byte {
	if n := len(v); n > 0 && v[n-1] == '\n' {
		v = v[:n-1]
		if n > 1 && v[n-2] == '\r' {
			v = v[:n-2]
		}
	}
	if bytes.IndexByte(v, '\n') < 0 {
		return v
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '\n':
		case v[i] == '\r' && i+1 < len(v) && v[i+1] == '\n':
		default:
			out = append(out, v[i])
		}
	}
	return out
}

// StripComments returns v without its RFC 5322 comments: parenthesised
// text, nested parentheses included; an unmatched ")" is kept.
func StripComments(v string) string {
	var b strings.Builder
	depth := 0
	for _, r := range v {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}
