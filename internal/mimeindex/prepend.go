package mimeindex

import (
	"bytes"
	"io"
)

// Prepend makes m, the index of a message msg, the index of fields+msg
// without reading msg's body again: every offset moves by len(fields) and
// the top-level envelope is read again from fields and header, msg's
// top-level header block ([0, m.Root.BodyStart) of msg). fields must be
// whole header fields, each line ending in a line break, such as the trace
// fields a server adds (Received, Authentication-Results, a DKIM
// signature).
//
// It reports false, leaving m as it was, when the result could differ
// from indexing fields+msg afresh, and the caller must do that: fields
// that are not whole lines or hold a blank line or a Content-* field (the
// top-level part's type would change), a header that starts with a
// continuation line (it would join the last prepended field), or a header
// so large that the parser's limits would cut it differently.
func (m *Message) Prepend(fields, header []byte) bool {
	n := int64(len(fields))
	if n == 0 {
		return true
	}
	if m.Root == nil || m.Root.HeaderStart != 0 || m.Root.BodyStart != int64(len(header)) ||
		!wholeFields(fields) || len(header) > 0 && (header[0] == ' ' || header[0] == '\t') ||
		n+int64(len(header)) > maxHeaderBytes || n+headerBytes(m.Root) >= headerBudget {
		return false
	}
	// The envelope is all that the top-level header's fields decide
	// besides the Content-* ones; a header-only message gives it.
	top, err := Index(io.MultiReader(bytes.NewReader(fields), bytes.NewReader(header)))
	if err != nil {
		return false // cannot happen: bytes.Reader never fails
	}
	m.Envelope = top.Envelope
	m.Size += n
	m.Root.BodyStart += n
	m.Root.End += n
	for _, c := range m.Root.Children {
		c.shift(n)
	}
	return true
}

// shift moves p and its descendants n bytes further into the message.
func (p *Part) shift(n int64) {
	p.HeaderStart += n
	p.BodyStart += n
	p.End += n
	for _, c := range p.Children {
		c.shift(n)
	}
}

// headerBytes is the size of the header blocks of p and its descendants,
// blank lines included: no less than what Index counted against
// headerBudget.
func headerBytes(p *Part) int64 {
	n := p.BodyStart - p.HeaderStart
	for _, c := range p.Children {
		n += headerBytes(c)
	}
	return n
}

// wholeFields reports whether b is header fields that cannot change the
// top-level part's type: whole lines, no blank line, no continuation line
// first, no Content-* field.
func wholeFields(b []byte) bool {
	if len(b) == 0 || b[len(b)-1] != '\n' || b[0] == ' ' || b[0] == '\t' {
		return false
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		line := b[:i+1]
		b = b[i+1:]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return false
		}
		if len(line) >= len("content-") && bytes.EqualFold(line[:len("content-")], []byte("content-")) {
			return false
		}
	}
	return true
}
