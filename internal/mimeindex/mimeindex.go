// Package mimeindex computes, in one streaming pass, the MIME structure of a
// message: byte offsets of every part, the envelope and the per-part metadata
// an IMAP server needs for ENVELOPE, BODYSTRUCTURE, BODY[section],
// BINARY[section] and BINARY.SIZE, so that FETCH never has to re-parse the
// message.
//
// The result is meant to be stored as JSON next to the byte-exact message.
// All strings in the result are valid UTF-8 without NUL bytes (8-bit header
// bytes that are not UTF-8 are read as ISO-8859-1) so that they survive
// encoding/json and PostgreSQL jsonb unchanged.
//
// Parsing follows RFC 2046 and Dovecot's message parser:
//   - The line break before a boundary delimiter belongs to the delimiter,
//     so a part's body excludes it. When the delimiter directly follows a
//     part's header, the body is empty and the header keeps its blank line
//     (RFC 3501: header fetches include it; Dovecot would drop it).
//   - A delimiter line is "--" boundary, optionally followed by "--", then
//     optional white space; CRLF and bare LF both end lines. A delimiter of
//     an outer multipart also ends all inner parts.
//   - Preamble and epilogue are not parts. A multipart in which no
//     delimiter is found has no children (as in Dovecot); BODYSTRUCTURE
//     and Find then present one empty text/plain part.
//   - A multipart without boundary parameter is treated like any invalid
//     Content-Type: as the default type, so its body stays readable.
//   - A missing close delimiter ends the parts at the end of the enclosing
//     body; a header without blank line ends at the next delimiter or at
//     the end of input (lines without a colon stay in the header).
//   - message/rfc822 and message/global bodies are parsed recursively,
//     unless base64 or quoted-printable encoded.
package mimeindex

import (
	"bufio"
	"fmt"
	"io"
	"sync"

	"github.com/mailstack/mailstack/internal/headerscan"
)

// Version is the value of Message.Version produced by this package. It is
// bumped whenever the meaning of stored fields changes.
const Version = 1

// Resource limits. They bound the memory used by Index no matter how large or
// hostile the input is.
const (
	maxHeaderBytes     = 1 << 20 // header bytes parsed per part; the rest is skipped (but counted)
	headerBudget       = 8 << 20 // header bytes parsed per message at the full per-part limit
	reducedHeaderBytes = 4 << 10 // per-part limit once headerBudget is used up
	maxDepth           = 100     // nesting of multiparts and message/rfc822 parts
	maxParts           = 10000   // parts per message, including the root
	maxAddresses       = 10000   // addresses kept per address header field
	bufSize            = 64 << 10
)

// Message is the index of a whole message.
type Message struct {
	Version  int       `json:"v"`             // encoding version, see Version
	Size     int64     `json:"size"`          // total bytes read
	Envelope *Envelope `json:"env,omitempty"` // envelope of the top-level message; never nil from Index
	Root     *Part     `json:"root"`          // the top-level entity; its header is the message header
}

// Part describes one MIME entity. All offsets are relative to the start of
// the whole message: the header is [HeaderStart,BodyStart) (including the
// blank separator line, if any) and the body is [BodyStart,End).
//
// A Part with Type "multipart" is a container: its Children are the body
// parts (the preamble and epilogue are not parts). A message/rfc822 or
// message/global Part whose body was parsed has exactly one child: the root
// entity of the encapsulated message, whose HeaderStart is the parent's
// BodyStart. Every other Part is a leaf.
type Part struct {
	HeaderStart int64 `json:"hs"`
	BodyStart   int64 `json:"bs"`
	End         int64 `json:"end"`
	// BodyLines is the number of LF-terminated lines in the body, which is
	// what Dovecot reports as body-fld-lines.
	BodyLines int64 `json:"lines,omitempty"`

	Type    string            `json:"type"`             // lowercase media type, e.g. "text"
	Subtype string            `json:"sub"`              // lowercase media subtype, e.g. "plain"
	Params  map[string]string `json:"params,omitempty"` // Content-Type parameters, lowercase keys, decoded values

	ID          string `json:"id,omitempty"`   // Content-ID, raw
	Description string `json:"desc,omitempty"` // Content-Description, raw
	Encoding    string `json:"enc,omitempty"`  // Content-Transfer-Encoding, uppercase, default "7BIT"

	Disposition       string            `json:"disp,omitempty"` // Content-Disposition value, lowercase
	DispositionParams map[string]string `json:"dparams,omitempty"`
	Language          []string          `json:"lang,omitempty"` // Content-Language tags
	Location          string            `json:"loc,omitempty"`  // Content-Location, raw
	MD5               string            `json:"md5,omitempty"`  // Content-MD5, raw

	// DecodedSize is the size of the body after Content-Transfer-Encoding
	// decoding with NewDecoder. For identity encodings, unknown encodings
	// and containers it is the raw body size.
	DecodedSize int64 `json:"dsize,omitempty"`

	// Envelope is set for message/rfc822 and message/global parts whose
	// body was parsed.
	Envelope *Envelope `json:"env,omitempty"`
	Children []*Part   `json:"parts,omitempty"`
}

// Envelope holds the envelope header fields of a message as they appear:
// unfolded (line breaks of folded lines removed) and surrounding white space
// trimmed, but not MIME-decoded. A missing field is empty. Decoded gives
// the envelope as IMAP's ENVELOPE sends it.
type Envelope struct {
	Date      string    `json:"date,omitempty"`
	Subject   string    `json:"subj,omitempty"`
	From      []Address `json:"from,omitempty"`
	Sender    []Address `json:"sender,omitempty"`
	ReplyTo   []Address `json:"replyto,omitempty"`
	To        []Address `json:"to,omitempty"`
	Cc        []Address `json:"cc,omitempty"`
	Bcc       []Address `json:"bcc,omitempty"`
	InReplyTo string    `json:"irt,omitempty"`
	MessageID string    `json:"mid,omitempty"`
}

// Address is one element of an address list, shaped like an IMAP address
// (RFC 3501 §7.4.2), as ParseAddressList produces it:
//   - A group start is {Mailbox: group name} and a group end the zero
//     Address; members sit between them. Groups do not nest, so markers
//     alternate start, end (a group with an empty name starts with a zero
//     Address too).
//   - Name is the raw display name (quotes and comments removed, words
//     joined by one space, encoded-words kept), or the comment of
//     "user@host (Name)".
//   - Route is an obsolete source route as written in "<@a,@b:user@host>",
//     i.e. "@a,@b" (the IMAP adl), or "INVALID_ROUTE" if it is broken.
//   - Mailbox is the local part, unquoted ("a b" for `"a b"@host`).
//   - An address lacking a local part or domain gets "MISSING_MAILBOX" or
//     "MISSING_DOMAIN", and a broken <...> address the domain
//     "SYNTAX_ERROR", as in Dovecot, so that Host is empty only for group
//     markers.
//
// Messages indexed before Route existed have none, and their Mailbox keeps
// the quotes of a quoted local part.
type Address struct {
	Name    string `json:"name,omitempty"`
	Route   string `json:"route,omitempty"`
	Mailbox string `json:"mbox,omitempty"`
	Host    string `json:"host,omitempty"`
}

// Index reads a whole RFC 5322 message from r in a single pass and returns
// its structure. Memory use is bounded: bodies are never buffered and header
// parsing, nesting depth and part count are capped, with the excess counted
// in offsets but not analysed.
//
// Index never fails on malformed input (truncated multiparts, missing
// boundaries, bad encodings, 8-bit headers, missing header/body separator,
// CRLF or bare LF line endings, NUL bytes); it returns a best-effort
// structure. It returns an error only if reading r fails.
func Index(r io.Reader) (*Message, error) {
	ix := indexers.Get().(*indexer)
	defer ix.release()
	ix.s.br.Reset(r)
	root := &Part{}
	_, env := ix.parsePart(root, "text", "plain", 0, true)
	if ix.s.err != nil {
		return nil, fmt.Errorf("mimeindex: reading message: %w", ix.s.err)
	}
	return &Message{Version: Version, Size: ix.s.pos, Envelope: env, Root: root}, nil
}

// indexers recycles the read buffer and scratch space, which would
// otherwise dominate the allocations for typical small messages.
var indexers = sync.Pool{New: func() any {
	return &indexer{s: scanner{br: bufio.NewReaderSize(nil, bufSize)}, budget: headerBudget}
}}

func (ix *indexer) release() {
	ix.s.br.Reset(nil)                // do not keep the caller's reader alive
	clear(ix.fields[:cap(ix.fields)]) // they point into hbuf
	clear(ix.bounds[:cap(ix.bounds)])
	*ix = indexer{
		s:       scanner{br: ix.s.br},
		budget:  headerBudget,
		bounds:  ix.bounds[:0],
		hbuf:    ix.hbuf[:0],
		fields:  ix.fields[:0],
		scratch: ix.scratch[:0],
	}
	if cap(ix.hbuf) > 64<<10 {
		ix.hbuf = nil // an unusual header; do not pin up to 1 MiB
	}
	indexers.Put(ix)
}

// scanner splits the input into lines while tracking exact offsets. Lines
// longer than the buffer come in several chunks; such lines are never
// boundaries or blank lines, so only their length matters.
type scanner struct {
	br  *bufio.Reader
	pos int64 // offset of the next unread byte
	lf  int64 // LF bytes read so far
	err error // first read error other than io.EOF
	eof bool

	start   int64 // offset of the current line
	startLF int64 // lf at start
	eol     int   // length of the current line's terminator (0, 1 or 2), once complete
	prevEOL int   // terminator length of the line before the current one
	lastCR  bool  // the previous chunk of the current line ended in '\r'
}

// begin starts a new line and returns its first chunk and whether that chunk
// completes the line. ok is false at end of input.
func (s *scanner) begin() (b []byte, complete, ok bool) {
	if s.eof {
		return nil, false, false
	}
	s.prevEOL, s.eol = s.eol, 0
	s.start, s.startLF = s.pos, s.lf
	s.lastCR = false
	b, complete = s.chunk()
	if len(b) == 0 && s.eof {
		return nil, false, false
	}
	return b, complete, true
}

// chunk returns the next piece of the current line.
func (s *scanner) chunk() ([]byte, bool) {
	b, err := s.br.ReadSlice('\n')
	s.pos += int64(len(b))
	switch err {
	case nil:
		s.lf++
		if (len(b) >= 2 && b[len(b)-2] == '\r') || (len(b) == 1 && s.lastCR) {
			s.eol = 2
		} else {
			s.eol = 1
		}
		return b, true
	case bufio.ErrBufferFull:
		s.lastCR = b[len(b)-1] == '\r'
		return b, false
	default:
		if err != io.EOF {
			s.err = err
		}
		s.eof = true
		return b, true
	}
}

// finishLine consumes the rest of a line whose first chunk was incomplete.
func (s *scanner) finishLine(complete bool) {
	for !complete {
		_, complete = s.chunk()
	}
}

// stop describes where a body ended: at a boundary line of the stack (idx)
// or at end of input (idx -1).
type stop struct {
	idx   int
	close bool  // the boundary was a close delimiter ("--b--")
	end   int64 // end offset of the body that was cut off
	endLF int64 // LF count at end
}

type indexer struct {
	s      scanner
	bounds [][]byte // active delimiters ("--" + boundary), innermost last
	parts  int
	budget int // remaining headerBudget

	hbuf    []byte             // header of the part being parsed, reused
	fields  []headerscan.Field // fields of hbuf, reused
	scratch []byte             // decoder output, only counted
}

func (ix *indexer) eofStop() stop {
	return stop{idx: -1, end: ix.s.pos, endLF: ix.s.lf}
}

// boundaryStop is the stop for a boundary found on the current line: the
// line break before the delimiter belongs to the delimiter (RFC 2046
// §5.1.1), so the body ends before it.
func (ix *indexer) boundaryStop(idx int, closing bool) stop {
	st := stop{idx: idx, close: closing, end: ix.s.start - int64(ix.s.prevEOL), endLF: ix.s.startLF}
	if ix.s.prevEOL > 0 {
		st.endLF--
	}
	return st
}

// match reports whether line is a delimiter of one of bounds[:limit],
// innermost first. Trailing white space (transport padding) is allowed.
func (ix *indexer) match(line []byte, limit int) (idx int, closing bool) {
	if limit == 0 || len(line) < 3 || line[0] != '-' || line[1] != '-' {
		return -1, false
	}
	n := len(line)
	for n > 0 && (line[n-1] == '\n' || line[n-1] == '\r' || line[n-1] == ' ' || line[n-1] == '\t') {
		n--
	}
	line = line[:n]
	for i := limit - 1; i >= 0; i-- {
		d := ix.bounds[i]
		if len(line) < len(d) || string(line[:len(d)]) != string(d) {
			continue
		}
		switch rest := line[len(d):]; {
		case len(rest) == 0:
			return i, false
		case len(rest) == 2 && rest[0] == '-' && rest[1] == '-':
			return i, true
		}
	}
	return -1, false
}

// setEnd records where p's body ended. bodyLF is the LF count at BodyStart.
func (p *Part) setEnd(st stop, bodyLF int64) {
	if st.end <= p.BodyStart {
		// Empty body: the line break before the delimiter was the header's.
		p.End, p.BodyLines = p.BodyStart, 0
		return
	}
	p.End, p.BodyLines = st.end, st.endLF-bodyLF
}

// parsePart parses one entity starting at the current position. defType and
// defSub are the default content type. If wantEnv, the entity is the root
// of a message and its envelope is returned.
func (ix *indexer) parsePart(p *Part, defType, defSub string, depth int, wantEnv bool) (stop, *Envelope) {
	ix.parts++
	p.HeaderStart = ix.s.pos
	bodyStart, st, ended := ix.readHeader()
	p.BodyStart = bodyStart
	bodyLF := ix.s.lf
	if ended {
		bodyLF = st.endLF
	}

	ix.splitFields()
	var env *Envelope
	if wantEnv {
		env = ix.envelope()
	}
	boundary := ix.applyHeader(p, defType, defSub)

	switch {
	case p.Type == "multipart":
		if !ended && boundary != "" && depth < maxDepth {
			st = ix.parseMultipart(p, boundary, depth)
		} else if !ended {
			st = ix.skipUntil(len(ix.bounds))
		}
		p.setEnd(st, bodyLF)
		p.DecodedSize = p.End - p.BodyStart
	case isMessageType(p.Type, p.Subtype) && !transformingEncoding(p.Encoding) && depth < maxDepth:
		child := &Part{}
		p.Children = []*Part{child}
		if ended {
			// Empty encapsulated message: keep the tree regular.
			child.HeaderStart, child.BodyStart, child.End = p.BodyStart, p.BodyStart, p.BodyStart
			child.Type, child.Subtype, child.Encoding = "text", "plain", "7BIT"
			ix.parts++
			p.Envelope = &Envelope{}
		} else {
			st, p.Envelope = ix.parsePart(child, "text", "plain", depth+1, true)
		}
		p.setEnd(st, bodyLF)
		p.DecodedSize = p.End - p.BodyStart
	default:
		var dsize int64
		if !ended {
			st, dsize = ix.leafBody(p.Encoding)
		}
		p.setEnd(st, bodyLF)
		if dsize >= 0 {
			p.DecodedSize = dsize
		} else {
			p.DecodedSize = p.End - p.BodyStart
		}
	}
	if p.End > st.end {
		// The body was empty and kept the line break before the delimiter
		// in the header; the enclosing parts must then end here too.
		st.end, st.endLF = p.End, bodyLF
	}
	return st, env
}

// readHeader reads header lines up to and including the blank line. It
// returns the body offset; ended is set (with st) if a delimiter or end of
// input came before the blank line, in which case the body is empty.
//
// A line without a colon does not end the header (as in Dovecot): a message
// without a separator line is all header.
func (ix *indexer) readHeader() (bodyStart int64, st stop, ended bool) {
	s := &ix.s
	limit := maxHeaderBytes
	if ix.budget <= 0 {
		limit = reducedHeaderBytes
	}
	ix.hbuf = ix.hbuf[:0]
	full := false
	defer func() { ix.budget -= len(ix.hbuf) }()
	for {
		b, complete, ok := s.begin()
		if !ok {
			return s.pos, ix.eofStop(), true
		}
		if complete {
			if (len(b) == 1 && b[0] == '\n') || (len(b) == 2 && b[0] == '\r' && b[1] == '\n') {
				return s.pos, stop{}, false
			}
			if idx, closing := ix.match(b, len(ix.bounds)); idx >= 0 {
				return s.start, stop{idx: idx, close: closing, end: s.start, endLF: s.startLF}, true
			}
		}
		mark := len(ix.hbuf)
		for {
			if !full {
				if len(ix.hbuf)+len(b) > limit {
					ix.hbuf, full = ix.hbuf[:mark], true
				} else {
					ix.hbuf = append(ix.hbuf, b...)
				}
			}
			if complete {
				break
			}
			b, complete = s.chunk()
		}
	}
}

// splitFields splits ix.hbuf into header fields. Lines without a colon and
// continuation lines without a field are ignored.
func (ix *indexer) splitFields() {
	ix.fields = ix.fields[:0]
	for s := headerscan.NewScanner(ix.hbuf); s.Next(); {
		if f := s.Field(); f.IsField() {
			ix.fields = append(ix.fields, f)
		}
	}
}

// get returns the unfolded value of the first field named key.
func (ix *indexer) get(key string) (string, bool) {
	for _, f := range ix.fields {
		if f.Is(key) {
			return unfold(f.Value), true
		}
	}
	return "", false
}

// parseMultipart parses the body of p, a multipart with the given boundary,
// up to the end of the enclosing body.
func (ix *indexer) parseMultipart(p *Part, boundary string, depth int) stop {
	ix.bounds = append(ix.bounds, []byte("--"+boundary))
	me := len(ix.bounds) - 1
	defer func() { ix.bounds = ix.bounds[:me] }()

	// RFC 2046 §5.1.5: in a digest the default type is message/rfc822.
	defType, defSub := "text", "plain"
	if p.Subtype == "digest" {
		defType, defSub = "message", "rfc822"
	}
	st := ix.skipUntil(me + 1) // preamble
	for {
		if st.idx != me {
			return st // end of input or an outer delimiter
		}
		if st.close || ix.parts >= maxParts {
			// Epilogue, or too many parts: the rest belongs to this
			// multipart's body until an outer delimiter.
			return ix.skipUntil(me)
		}
		child := &Part{}
		p.Children = append(p.Children, child)
		st, _ = ix.parsePart(child, defType, defSub, depth+1, false)
	}
}

// skipUntil skips lines until a delimiter of bounds[:limit] or end of input.
func (ix *indexer) skipUntil(limit int) stop {
	for {
		b, complete, ok := ix.s.begin()
		if !ok {
			return ix.eofStop()
		}
		if complete {
			if idx, closing := ix.match(b, limit); idx >= 0 {
				return ix.boundaryStop(idx, closing)
			}
		}
		ix.s.finishLine(complete)
	}
}

var (
	crlf = []byte("\r\n")
	lf   = []byte("\n")
	cr   = []byte("\r")
)

// leafBody scans a leaf body up to a delimiter or end of input, counting
// its decoded size (-1 if the encoding needs no decoding).
//
// The decoder is fed exactly the bytes of [BodyStart,End): each line
// terminator is held back until the next line shows it is not the one
// belonging to a delimiter.
func (ix *indexer) leafBody(encoding string) (stop, int64) {
	d := newTransferDecoder(encoding)
	if d == nil {
		return ix.skipUntil(len(ix.bounds)), -1
	}
	var size int64
	var carry []byte
	feed := func(b []byte) {
		if len(b) > 0 {
			ix.scratch = d.decode(ix.scratch[:0], b)
			size += int64(len(ix.scratch))
		}
	}
	s := &ix.s
	for {
		b, complete, ok := s.begin()
		if !ok {
			feed(carry)
			ix.scratch = d.flush(ix.scratch[:0])
			return ix.eofStop(), size + int64(len(ix.scratch))
		}
		if complete {
			if idx, closing := ix.match(b, len(ix.bounds)); idx >= 0 {
				ix.scratch = d.flush(ix.scratch[:0])
				return ix.boundaryStop(idx, closing), size + int64(len(ix.scratch))
			}
		}
		for {
			n := len(b)
			switch {
			case complete && n > 0 && b[n-1] == '\n':
				if n == 1 && len(carry) == 1 && carry[0] == '\r' {
					carry = crlf // CR at the end of the previous chunk
					break
				}
				feed(carry)
				if n >= 2 && b[n-2] == '\r' {
					feed(b[:n-2])
					carry = crlf
				} else {
					feed(b[:n-1])
					carry = lf
				}
			case !complete && b[n-1] == '\r':
				feed(carry)
				feed(b[:n-1])
				carry = cr
			default:
				feed(carry)
				feed(b)
				carry = nil
			}
			if complete {
				break
			}
			b, complete = s.chunk()
		}
	}
}

func isMessageType(typ, sub string) bool {
	return typ == "message" && (sub == "rfc822" || sub == "global")
}

// transformingEncoding reports whether a body in this encoding cannot be
// parsed as is. An encapsulated message in base64 (allowed for
// message/global) is kept as an opaque leaf rather than parsed as garbage;
// unknown encodings (typos like "8-bit") are parsed as best effort.
func transformingEncoding(enc string) bool {
	return enc == "BASE64" || enc == "QUOTED-PRINTABLE"
}
