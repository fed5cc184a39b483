package smtpd

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/mailstack/mailstack/internal/headerscan"
)

// maxHeaderBytes bounds the top-level header block, the only part of a
// message held in memory whole.
const maxHeaderBytes = 1 << 20

var (
	errHeaderTooBig    = errors.New("header block too large")
	errMalformedHeader = errors.New("malformed header")
)

// incoming is a message being received: its top-level header, parsed and
// raw, and the rest of the stream.
type incoming struct {
	raw    []byte // header block exactly as received, blank line included if any
	header textproto.Header
	rest   io.Reader
}

// readIncoming reads the top-level header block from r and leaves the body
// unread in rest, so the body is only ever streamed. If the block cannot be
// parsed, the error wraps errMalformedHeader and the incoming is returned
// too, with raw and rest intact.
func readIncoming(r io.Reader) (*incoming, error) {
	// A small buffer: most messages are small, and a longer line is read in
	// pieces.
	br := bufio.NewReaderSize(r, 4<<10)
	var raw []byte
	for partial := false; ; {
		line, err := br.ReadSlice('\n')
		// The end of a line longer than the buffer is not a blank line,
		// even when all that is left of it is its line break.
		wasPartial := partial
		partial = errors.Is(err, bufio.ErrBufferFull)
		if partial {
			err = nil // a long line: keep reading it
		}
		raw = append(raw, line...)
		if len(raw) > maxHeaderBytes {
			return nil, errHeaderTooBig
		}
		if errors.Is(err, io.EOF) {
			break // header only, no body
		}
		if err != nil {
			return nil, err
		}
		if !wasPartial && (string(line) == "\r\n" || string(line) == "\n") {
			break
		}
	}
	parse := raw
	if !bytes.HasSuffix(parse, []byte("\r\n\r\n")) && !bytes.HasSuffix(parse, []byte("\n\n")) {
		parse = append(bytes.Clone(parse), "\r\n\r\n"...)
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(parse)))
	if err != nil {
		// The message is still returned for callers that accept ugly mail
		// rather than lose it (the MX), with every field that can be read
		// at all: a malformed line must not hide the From field from the
		// checks while mail clients still show it.
		return &incoming{raw: raw, header: lenientHeader(raw), rest: br}, fmt.Errorf("%w: %w", errMalformedHeader, err)
	}
	return &incoming{raw: raw, header: h, rest: br}, nil
}

// lenientHeader parses a header block that textproto.ReadHeader refuses:
// it skips what is not a field (a line without a colon, a field name with
// bytes outside RFC 5322's printable ASCII, a continuation line with no
// field before it) and keeps every other field, also those after the
// first bad line, where ReadHeader stops.
func lenientHeader(raw []byte) textproto.Header {
	var h textproto.Header
	for sc := headerscan.NewScanner(raw); sc.Next(); {
		f := sc.Field()
		valid := f.IsField()
		for _, c := range f.Name {
			valid = valid && c > ' ' && c <= '~'
		}
		if valid {
			h.AddRaw(bytes.Clone(f.Raw))
		}
	}
	return h
}

// removeFields deletes every field named one of names (case-insensitive)
// from the header, raw and parsed, continuation lines included. Only the
// header block is touched; the body stays a stream.
func (m *incoming) removeFields(names ...string) {
	out := make([]byte, 0, len(m.raw))
	sc := headerscan.NewScanner(m.raw)
	for sc.Next() {
		f := sc.Field()
		if !slices.ContainsFunc(names, f.Is) {
			out = append(out, f.Raw...)
		}
	}
	m.raw = append(out, sc.Rest()...)
	for _, n := range names {
		m.header.Del(n)
	}
}

// addresses returns the addresses of an address-list header field.
func (m *incoming) addresses(key string) ([]*mail.Address, error) {
	h := mail.Header{Header: message.Header{Header: m.header}}
	return h.AddressList(key)
}

// traceInfo is what the Received header says about a submission.
type traceInfo struct {
	helo, ip, hostname, id string
	tls                    string // negotiated TLS version and cipher
	at                     time.Time
}

// prefix returns the header fields this server adds in front of the
// message: Received always, and Message-ID and Date when the client left
// them out (as Postfix does for submission, since some clients do).
func (m *incoming) prefix(t traceInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (mailstack) with ESMTPSA id %s", sanitize(t.helo), t.ip, t.hostname, t.id)
	if t.tls != "" {
		fmt.Fprintf(&b, "\r\n\t(%s)", t.tls)
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", t.at.Format(time.RFC1123Z))
	if !m.header.Has("Message-Id") {
		fmt.Fprintf(&b, "Message-ID: <%s.%s@%s>\r\n", t.at.UTC().Format("20060102150405"), t.id, t.hostname)
	}
	if !m.header.Has("Date") {
		fmt.Fprintf(&b, "Date: %s\r\n", t.at.Format(time.RFC1123Z))
	}
	return b.String()
}

// sanitize keeps a client-supplied name from breaking the header syntax.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '(' || r == ')' || r == '[' || r == ']' || r == ';' {
			return '_'
		}
		return r
	}, s)
	if len(s) > 255 {
		s = s[:255]
	}
	if s == "" {
		s = "unknown"
	}
	return s
}

// newID returns a short random id for Received headers and Message-IDs.
func newID() string {
	b := make([]byte, 8)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
