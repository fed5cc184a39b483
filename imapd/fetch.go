package imapd

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailstack/mailstack/internal/mimeindex"
	"github.com/mailstack/mailstack/store"
)

// maxPartHeader bounds the header of an encapsulated message that
// BODY[n.HEADER.FIELDS (...)] reads into memory to filter.
const maxPartHeader = 1 << 20

// Fetch implements imapserver.Session. ENVELOPE, BODYSTRUCTURE and section
// offsets come from the stored MIME index, top-level headers from the
// stored header block; bodies stream from the store's chunks into the
// response literal. Nothing is parsed again.
func (s *session) Fetch(w *imapserver.FetchWriter, set imap.NumSet, opts *imap.FetchOptions) error {
	if err := s.begin(); err != nil {
		return err
	}
	sel, err := s.selectedView()
	if err != nil {
		return err
	}
	ranges, err := sel.resolve(set, s.searchRes)
	if err != nil || len(ranges) == 0 {
		return err
	}
	// Implicit \Seen (RFC 9051 §6.4.5), before reading, so that the FLAGS
	// written below already include it.
	seen := map[uint32]bool{}
	if !sel.readOnly && setsSeen(opts) {
		changed, err := s.srv.st.StoreFlags(s.ctx, s.accountID(), s.mailbox.ID, ranges, store.FlagsAdd, []string{store.FlagSeen})
		if err != nil {
			return storeError(err, "FETCH")
		}
		for _, c := range changed {
			seen[c.UID] = true
		}
		s.srv.feed.catchUpWithFlags(s.ctx, s.mailbox, changed)
	}
	fo := store.FetchOptions{Structure: opts.Envelope || opts.BodyStructure != nil}
	bodies := len(opts.BinarySection) > 0
	for _, sec := range opts.BodySection {
		if len(sec.Part) > 0 || sec.Specifier == imap.PartSpecifierMIME {
			fo.Structure = true
		} else if sec.Specifier != imap.PartSpecifierNone {
			fo.Header = true // HEADER, HEADER.FIELDS(.NOT), TEXT of the message
		}
		if sec.Specifier != imap.PartSpecifierHeader || len(sec.Part) > 0 {
			bodies = true
		}
	}
	for _, sec := range opts.BinarySection {
		if len(sec.Part) > 0 {
			fo.Structure = true
		}
	}
	for _, sec := range opts.BinarySectionSize {
		if len(sec.Part) > 0 {
			fo.Structure = true
		}
	}
	f := &fetcher{s: s, sel: sel, w: w, opts: opts, seen: seen, structure: fo.Structure}
	batch := metaBatch
	switch {
	case bodies || fo.Header:
		batch = bodyBatch
	case fo.Structure:
		batch = structureBatch
	}
	return s.forEachMeta(sel, ranges, fo, batch, f.write)
}

// Batch sizes of forEachMeta: how many messages' metadata is held in memory
// while their responses are written. Bodies and headers (up to
// store.MaxStoredHeader each) come in small batches, envelopes and body
// structures in medium ones, flags and sizes in large ones.
const (
	bodyBatch      = 32
	structureBatch = 500
	metaBatch      = 5000
)

// forEachMeta calls fn for the messages of the view in ranges, reading
// their metadata n messages at a time. Each batch is read whole and its
// pool connection released before fn writes to the client, so a slow or
// stalled client never holds a database connection (and reading a body
// inside fn can take one of its own).
func (s *session) forEachMeta(sel *selected, ranges []store.UIDRange, fo store.FetchOptions, n int, fn func(*store.MessageMeta) error) error {
	uids := sel.uidsIn(ranges)
	batch := make([]store.MessageMeta, 0, min(len(uids), n))
	for len(uids) > 0 {
		k := min(len(uids), n)
		batch = batch[:0]
		err := s.srv.st.FetchMeta(s.ctx, s.accountID(), s.mailbox.ID, sel.uidRanges(uids[:k]), fo, func(m *store.MessageMeta) error {
			batch = append(batch, *m)
			return nil
		})
		if err != nil {
			return err
		}
		for i := range batch {
			if err := fn(&batch[i]); err != nil {
				return err
			}
		}
		uids = uids[k:]
	}
	return nil
}

// setsSeen reports whether the FETCH reads a body without .PEEK.
func setsSeen(opts *imap.FetchOptions) bool {
	for _, sec := range opts.BodySection {
		if !sec.Peek {
			return true
		}
	}
	for _, sec := range opts.BinarySection {
		if !sec.Peek {
			return true
		}
	}
	return false
}

type fetcher struct {
	s    *session
	sel  *selected
	w    *imapserver.FetchWriter
	opts *imap.FetchOptions
	seen map[uint32]bool // \Seen set by this FETCH: FLAGS are included

	structure bool // the MIME index is needed
}

// write writes the FETCH response of one message.
func (f *fetcher) write(m *store.MessageMeta) error {
	seq := f.sel.seqOf(m.UID)
	if seq == 0 {
		return nil
	}
	if f.structure && (m.Structure == nil || m.Structure.Root == nil) {
		return fmt.Errorf("message %d has no stored structure", m.MessageID)
	}
	opts := f.opts
	// Locate every section before anything of this message is written:
	// a failure is then a plain tagged NO, not a broken response.
	bodies := make([]source, len(opts.BodySection))
	for i, sec := range opts.BodySection {
		src, err := f.bodySection(m, sec)
		if err != nil {
			return err
		}
		bodies[i] = src
	}
	binaries := make([]source, len(opts.BinarySection))
	for i, sec := range opts.BinarySection {
		src, err := binarySection(m, sec.Part, sec.Partial)
		if err != nil {
			return err
		}
		binaries[i] = src
	}
	binarySizes := make([]int64, len(opts.BinarySectionSize))
	for i, sec := range opts.BinarySectionSize {
		src, err := binarySection(m, sec.Part, nil)
		if err != nil {
			return err
		}
		binarySizes[i] = src.size
	}
	rw := f.w.CreateMessage(seq)
	if opts.UID {
		rw.WriteUID(imap.UID(m.UID))
	}
	if opts.Flags || f.seen[m.UID] {
		rw.WriteFlags(toIMAPFlags(m.Flags))
	}
	if opts.InternalDate {
		rw.WriteInternalDate(m.InternalDate)
	}
	if opts.RFC822Size {
		rw.WriteRFC822Size(m.Size)
	}
	if opts.Envelope {
		rw.WriteEnvelope(m.Structure.Envelope.IMAP())
	}
	if opts.BodyStructure != nil {
		rw.WriteBodyStructure(m.Structure.Root.BodyStructure(opts.BodyStructure.Extended))
	}
	for i, sec := range opts.BodySection {
		if err := f.stream(m, rw.WriteBodySection(sec, bodies[i].size), bodies[i]); err != nil {
			return f.abort(rw, err)
		}
	}
	for i, sec := range opts.BinarySection {
		if err := f.stream(m, rw.WriteBinarySection(sec, binaries[i].size), binaries[i]); err != nil {
			return f.abort(rw, err)
		}
	}
	for i, sec := range opts.BinarySectionSize {
		rw.WriteBinarySectionSize(sec, uint32(min(binarySizes[i], 1<<32-1)))
	}
	if err := rw.Close(); err != nil {
		return err
	}
	if f.seen[m.UID] {
		f.sel.reported(m.UID, m.Flags)
	}
	return nil
}

// abort ends the connection after a failure inside a literal: the response
// cannot be completed, and anything written after it would be read as part
// of the literal.
func (f *fetcher) abort(rw *imapserver.FetchResponseWriter, err error) error {
	f.s.srv.log.Error("fetch: streaming a body failed; closing the connection", "err", err)
	f.s.conn.NetConn().Close()
	rw.Close() // releases imapserver's writer lock; the write fails
	return errSessionEnded
}

// source is the content of one section: bytes already in memory, or a raw
// byte range of the message, optionally decoded (BINARY) and then cut to
// a partial window.
type source struct {
	data       []byte // when set, the whole content
	start, end int64  // raw range otherwise
	encoding   string // BINARY: transfer encoding to decode
	skip       int64  // decoded bytes to skip (BINARY partial)
	size       int64  // bytes written
}

func (f *fetcher) stream(m *store.MessageMeta, w io.WriteCloser, src source) error {
	if src.data != nil || src.size == 0 {
		_, err := w.Write(src.data[:src.size])
		if err == nil {
			err = w.Close()
		}
		return err
	}
	length := src.end - src.start
	if src.encoding == "" {
		length = src.size
	}
	body, err := f.s.srv.st.OpenBody(f.s.ctx, f.s.accountID(), m.MessageID, src.start, length)
	if err != nil {
		return err
	}
	if src.encoding != "" {
		body = mimeindex.NewDecoder(src.encoding, body)
		if src.skip > 0 {
			if _, err := io.CopyN(io.Discard, body, src.skip); err != nil {
				return err
			}
		}
	}
	n, err := io.Copy(w, io.LimitReader(body, src.size))
	if err == nil && n != src.size {
		err = fmt.Errorf("message %d: section shorter than its index says (%d < %d)", m.MessageID, n, src.size)
	}
	if err == nil {
		err = w.Close()
	}
	return err
}

// window cuts the partial window <offset.size> out of a content of the
// given length: the offset of the first byte and the number of bytes.
func window(length int64, p *imap.SectionPartial) (int64, int64) {
	if p == nil {
		return 0, length
	}
	if p.Offset >= length {
		return length, 0
	}
	return p.Offset, min(p.Size, length-p.Offset)
}

func rawRange(start, end int64, p *imap.SectionPartial) source {
	off, n := window(end-start, p)
	return source{start: start + off, end: start + off + n, size: n}
}

func memSource(b []byte, p *imap.SectionPartial) source {
	off, n := window(int64(len(b)), p)
	return source{data: b[off : off+n], size: n}
}

var empty = source{data: []byte{}}

// isMessagePart reports whether p is an encapsulated message whose body
// was indexed (its one child is the message's root entity).
func isMessagePart(p *mimeindex.Part) bool {
	return p.Type == "message" && (p.Subtype == "rfc822" || p.Subtype == "global") && len(p.Children) == 1
}

// bodySection locates BODY[section] (RFC 9051 §6.4.5). Only the header
// of an encapsulated message filtered by HEADER.FIELDS reads the store.
func (f *fetcher) bodySection(m *store.MessageMeta, sec *imap.FetchItemBodySection) (source, error) {
	if len(sec.Part) == 0 {
		switch sec.Specifier {
		case imap.PartSpecifierNone:
			return rawRange(0, m.Size, sec.Partial), nil
		case imap.PartSpecifierHeader:
			if int64(len(m.Header)) < m.HeaderSize && len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0 {
				// Larger than the stored copy: stream it from the body.
				// (HEADER.FIELDS of such a header sees its first
				// store.MaxStoredHeader bytes only.)
				return rawRange(0, m.HeaderSize, sec.Partial), nil
			}
			return memSource(headerSection(m.Header, sec), sec.Partial), nil
		case imap.PartSpecifierText:
			return rawRange(m.HeaderSize, m.Size, sec.Partial), nil
		}
		return empty, nil
	}
	p := m.Structure.Root.Find(sec.Part)
	if p == nil {
		return empty, nil
	}
	switch sec.Specifier {
	case imap.PartSpecifierNone:
		return rawRange(p.BodyStart, p.End, sec.Partial), nil
	case imap.PartSpecifierMIME:
		return rawRange(p.HeaderStart, p.BodyStart, sec.Partial), nil
	}
	// n.HEADER and n.TEXT address the message inside a message/rfc822 part.
	if !isMessagePart(p) {
		return empty, nil
	}
	inner := p.Children[0]
	if sec.Specifier == imap.PartSpecifierText {
		return rawRange(inner.BodyStart, inner.End, sec.Partial), nil
	}
	if len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0 {
		return rawRange(inner.HeaderStart, inner.BodyStart, sec.Partial), nil
	}
	n := min(inner.BodyStart-inner.HeaderStart, maxPartHeader)
	r, err := f.s.srv.st.OpenBody(f.s.ctx, f.s.accountID(), m.MessageID, inner.HeaderStart, n)
	if err != nil {
		return source{}, fmt.Errorf("fetch: header of part %v of message %d: %w", sec.Part, m.MessageID, err)
	}
	hdr, err := io.ReadAll(r)
	if err != nil {
		return source{}, fmt.Errorf("fetch: header of part %v of message %d: %w", sec.Part, m.MessageID, err)
	}
	return memSource(headerSection(hdr, sec), sec.Partial), nil
}

// errUnknownCTE answers BINARY of a part whose transfer encoding the server
// cannot decode (RFC 3516 §4.2).
var errUnknownCTE = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnknownCTE,
	Text: "Unknown Content-Transfer-Encoding"}

// binarySection locates BINARY[part]: the decoded body of a leaf part, or
// the raw content of the whole message or a container. A leaf in an
// encoding other than the identity ones, base64 and quoted-printable (say
// x-uuencode) cannot be decoded: errUnknownCTE, not raw bytes.
func binarySection(m *store.MessageMeta, part []int, partial *imap.SectionPartial) (source, error) {
	if len(part) == 0 {
		return rawRange(0, m.Size, partial), nil
	}
	p := m.Structure.Root.Find(part)
	if p == nil {
		return empty, nil
	}
	if p.Type == "multipart" || isMessagePart(p) {
		return rawRange(p.BodyStart, p.End, partial), nil
	}
	switch strings.ToUpper(p.Encoding) {
	case "", "7BIT", "8BIT", "BINARY":
		return rawRange(p.BodyStart, p.End, partial), nil
	case "BASE64", "QUOTED-PRINTABLE":
		off, n := window(p.DecodedSize, partial)
		return source{start: p.BodyStart, end: p.End, encoding: p.Encoding, skip: off, size: n}, nil
	}
	return source{}, errUnknownCTE
}

// headerSection returns a header block whole, or filtered by
// HEADER.FIELDS / HEADER.FIELDS.NOT, always ending with the blank line.
func headerSection(hdr []byte, sec *imap.FetchItemBodySection) []byte {
	if len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0 {
		return hdr
	}
	want := sec.HeaderFields
	keep := true
	if len(want) == 0 {
		want, keep = sec.HeaderFieldsNot, false
	}
	var out bytes.Buffer
	rest := hdr
	var field []byte // current field with its continuation lines
	include := false
	flush := func() {
		if include {
			out.Write(field)
		}
		field = nil
	}
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // the blank line ending the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			field = append(field, line...)
			continue
		}
		flush()
		name, _, ok := bytes.Cut(line, []byte(":"))
		matched := false
		if ok {
			n := strings.TrimSpace(string(name))
			for _, h := range want {
				if strings.EqualFold(n, h) {
					matched = true
					break
				}
			}
		}
		include = matched == keep && (ok || !keep)
		field = append(field[:0:0], line...)
	}
	flush()
	out.WriteString("\r\n")
	return out.Bytes()
}
