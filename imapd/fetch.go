package imapd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailstack/mailstack/imapd/imapwire"
	"github.com/mailstack/mailstack/internal/headerscan"
	"github.com/mailstack/mailstack/internal/mimeindex"
	"github.com/mailstack/mailstack/store"
)

// maxPartHeader bounds the header of an encapsulated message that
// BODY[n.HEADER.FIELDS (...)] reads into memory to filter.
const maxPartHeader = 1 << 20

// fetchKind is what a FETCH data item asks for.
type fetchKind int

const (
	fetchUID fetchKind = iota
	fetchFlags
	fetchInternalDate
	fetchSize
	fetchEnvelope
	fetchBody          // BODY: the non-extensible body structure
	fetchBodyStructure // BODYSTRUCTURE
	fetchSection       // BODY[...], BODY.PEEK[...], RFC822, RFC822.HEADER, RFC822.TEXT
	fetchBinary        // BINARY[...], BINARY.PEEK[...]
	fetchBinarySize    // BINARY.SIZE[...]
	fetchModSeq        // MODSEQ (RFC 7162)
)

// fetchItem is one data item of a FETCH, with the name its response
// carries.
type fetchItem struct {
	kind    fetchKind
	name    string // response name, e.g. "BODY[1.HEADER]", "RFC822.TEXT"
	section *imap.FetchItemBodySection
	part    []int                // BINARY
	partial *imap.SectionPartial // BINARY
	peek    bool
}

// fetchRequest is a parsed FETCH.
type fetchRequest struct {
	items []fetchItem
	uid   bool
	// changedSince (with hasChangedSince): only messages changed after
	// it (CHANGEDSINCE); vanished: also VANISHED (EARLIER) for those
	// expunged after it (QRESYNC's UID FETCH modifier).
	changedSince    uint64
	hasChangedSince bool
	vanished        bool
	// autoUID: the UID item was added for UID FETCH, not asked for (a
	// UIDFETCH response leaves it out, RFC 9586 §3.3).
	autoUID bool
	// partial: only these of the messages (PARTIAL modifier, RFC 9394).
	partial *partialRange
}

// parseFetch reads FETCH's arguments after the sequence set.
func parseFetch(d *imapwire.Decoder, uid bool) (*fetchRequest, error) {
	req := &fetchRequest{uid: uid}
	if d.PeekIs('(') {
		err := d.List(func() error { return req.item(d) })
		if err != nil {
			return nil, err
		}
		if len(req.items) == 0 {
			return nil, bad("FETCH needs at least one data item")
		}
	} else {
		a, err := d.AtomUpTo('[')
		if err != nil {
			return nil, err
		}
		switch strings.ToUpper(a) {
		case "ALL":
			req.add(fetchFlags, "FLAGS").add(fetchInternalDate, "INTERNALDATE").add(fetchSize, "RFC822.SIZE").add(fetchEnvelope, "ENVELOPE")
		case "FAST":
			req.add(fetchFlags, "FLAGS").add(fetchInternalDate, "INTERNALDATE").add(fetchSize, "RFC822.SIZE")
		case "FULL":
			req.add(fetchFlags, "FLAGS").add(fetchInternalDate, "INTERNALDATE").add(fetchSize, "RFC822.SIZE").add(fetchEnvelope, "ENVELOPE").add(fetchBody, "BODY")
		default:
			if err := req.named(d, a); err != nil {
				return nil, err
			}
		}
	}
	if uid && !req.has(fetchUID) {
		req.items = append([]fetchItem{{kind: fetchUID, name: "UID"}}, req.items...)
		req.autoUID = true
	}
	return req, nil
}

func (r *fetchRequest) add(k fetchKind, name string) *fetchRequest {
	r.items = append(r.items, fetchItem{kind: k, name: name})
	return r
}

func (r *fetchRequest) has(k fetchKind) bool {
	for _, it := range r.items {
		if it.kind == k {
			return true
		}
	}
	return false
}

func (r *fetchRequest) item(d *imapwire.Decoder) error {
	a, err := d.AtomUpTo('[')
	if err != nil {
		return err
	}
	return r.named(d, a)
}

// named parses the data item whose name a was just read.
func (r *fetchRequest) named(d *imapwire.Decoder, a string) error {
	switch up := strings.ToUpper(a); up {
	case "UID":
		r.add(fetchUID, "UID")
	case "FLAGS":
		r.add(fetchFlags, "FLAGS")
	case "INTERNALDATE":
		r.add(fetchInternalDate, "INTERNALDATE")
	case "RFC822.SIZE":
		r.add(fetchSize, "RFC822.SIZE")
	case "ENVELOPE":
		r.add(fetchEnvelope, "ENVELOPE")
	case "BODYSTRUCTURE":
		r.add(fetchBodyStructure, "BODYSTRUCTURE")
	case "MODSEQ":
		r.add(fetchModSeq, "MODSEQ")
	case "RFC822":
		r.items = append(r.items, fetchItem{kind: fetchSection, name: up, section: &imap.FetchItemBodySection{}})
	case "RFC822.PEEK": // obsolete, sent by Outlook
		r.items = append(r.items, fetchItem{kind: fetchSection, name: "RFC822", section: &imap.FetchItemBodySection{Peek: true}, peek: true})
	case "RFC822.HEADER":
		r.items = append(r.items, fetchItem{kind: fetchSection, name: up,
			section: &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}, peek: true})
	case "RFC822.TEXT":
		r.items = append(r.items, fetchItem{kind: fetchSection, name: up, section: &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText}})
	case "BODY", "BODY.PEEK":
		if !d.PeekIs('[') {
			if up == "BODY.PEEK" {
				return bad("BODY.PEEK needs a section")
			}
			r.add(fetchBody, "BODY")
			return nil
		}
		sec, spec, err := parseSection(d)
		if err != nil {
			return err
		}
		sec.Peek = up == "BODY.PEEK"
		partial, origin, err := parsePartial(d)
		if err != nil {
			return err
		}
		sec.Partial = partial
		r.items = append(r.items, fetchItem{kind: fetchSection, name: "BODY[" + spec + "]" + origin, section: sec, peek: sec.Peek})
	case "BINARY", "BINARY.PEEK", "BINARY.SIZE":
		part, err := parseBinarySection(d)
		if err != nil {
			return err
		}
		spec := partString(part)
		if up == "BINARY.SIZE" {
			r.items = append(r.items, fetchItem{kind: fetchBinarySize, name: "BINARY.SIZE[" + spec + "]", part: part})
			return nil
		}
		partial, origin, err := parsePartial(d)
		if err != nil {
			return err
		}
		r.items = append(r.items, fetchItem{kind: fetchBinary, name: "BINARY[" + spec + "]" + origin, part: part,
			partial: partial, peek: up == "BINARY.PEEK"})
	default:
		return bad("Unknown FETCH data item " + truncate(a))
	}
	return nil
}

// maxPartDepth bounds a section part number (1.2.3...).
const maxPartDepth = 100

// parsePart reads "1.2.3" into numbers, stopping before a non-digit part
// (HEADER, TEXT, MIME); dotted says it read a dot after the last number
// (then such a part must follow).
func parsePart(d *imapwire.Decoder) (part []int, dotted bool, err error) {
	for {
		b, err := d.Peek()
		if err != nil {
			return nil, false, err
		}
		if b < '0' || b > '9' {
			return part, dotted, nil
		}
		n, err := d.Number()
		if err != nil {
			return nil, false, err
		}
		if n == 0 || n > 1<<31-1 {
			return nil, false, bad("Invalid section part number")
		}
		if part = append(part, int(n)); len(part) > maxPartDepth {
			return nil, false, bad("Section part too deep")
		}
		if dotted, err = d.Consume('.'); err != nil || !dotted {
			return part, false, err
		}
	}
}

// parseSection reads "[section]" and returns it with its spelling for the
// response (upper case; header field names as the client sent them).
func parseSection(d *imapwire.Decoder) (*imap.FetchItemBodySection, string, error) {
	if err := d.Expect('[', "["); err != nil {
		return nil, "", err
	}
	sec := &imap.FetchItemBodySection{}
	part, dotted, err := parsePart(d)
	if err != nil {
		return nil, "", err
	}
	sec.Part = part
	spec := partString(part)
	if len(part) > 0 && dotted == d.PeekIs(']') {
		return nil, "", bad("Invalid section")
	}
	if !d.PeekIs(']') {
		if len(part) > 0 {
			spec += "."
		}
		a, err := d.AtomUpTo(']')
		if err != nil {
			return nil, "", err
		}
		switch strings.ToUpper(a) {
		case "HEADER":
			sec.Specifier = imap.PartSpecifierHeader
		case "TEXT":
			sec.Specifier = imap.PartSpecifierText
		case "MIME":
			if len(part) == 0 {
				return nil, "", bad("MIME needs a part number")
			}
			sec.Specifier = imap.PartSpecifierMIME
		case "HEADER.FIELDS", "HEADER.FIELDS.NOT":
			sec.Specifier = imap.PartSpecifierHeader
			if err := d.SP(); err != nil {
				return nil, "", err
			}
			var names []string
			err := d.List(func() error {
				n, err := d.AString()
				if err == nil && (n == "" || strings.ContainsAny(n, ": \t")) {
					err = bad("Invalid header field name")
				}
				names = append(names, n)
				return err
			})
			if err != nil {
				return nil, "", err
			}
			if len(names) == 0 {
				return nil, "", bad("HEADER.FIELDS needs field names")
			}
			if strings.EqualFold(a, "HEADER.FIELDS") {
				sec.HeaderFields = names
			} else {
				sec.HeaderFieldsNot = names
			}
			var b strings.Builder
			b.WriteString(strings.ToUpper(a) + " (")
			for i, n := range names {
				if i > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(astring(n))
			}
			b.WriteByte(')')
			spec += b.String()
			a = ""
		default:
			return nil, "", bad("Unknown section " + truncate(a))
		}
		if a != "" {
			spec += strings.ToUpper(a)
		}
	}
	if err := d.Expect(']', "]"); err != nil {
		return nil, "", err
	}
	return sec, spec, nil
}

// astring spells a header field name for the response.
func astring(s string) string {
	for i := 0; i < len(s); i++ {
		if !imapwire.IsAtomChar(s[i]) {
			return strconv.Quote(s)
		}
	}
	return s
}

func partString(part []int) string {
	var b strings.Builder
	for i, n := range part {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

func parseBinarySection(d *imapwire.Decoder) ([]int, error) {
	if err := d.Expect('[', "["); err != nil {
		return nil, err
	}
	part, dotted, err := parsePart(d)
	if err != nil {
		return nil, err
	}
	if dotted {
		return nil, bad("Invalid section")
	}
	if err := d.Expect(']', "]"); err != nil {
		return nil, err
	}
	return part, nil
}

// parsePartial reads an optional "<offset.size>" and returns it with the
// "<offset>" of the response.
func parsePartial(d *imapwire.Decoder) (*imap.SectionPartial, string, error) {
	if ok, err := d.Consume('<'); err != nil || !ok {
		return nil, "", err
	}
	off, err := d.Number()
	if err != nil {
		return nil, "", err
	}
	if err := d.Expect('.', "."); err != nil {
		return nil, "", err
	}
	size, err := d.Number()
	if err != nil {
		return nil, "", err
	}
	if size == 0 {
		return nil, "", bad("Partial size must not be 0")
	}
	if err := d.Expect('>', ">"); err != nil {
		return nil, "", err
	}
	return &imap.SectionPartial{Offset: int64(off), Size: int64(size)}, "<" + strconv.FormatUint(uint64(off), 10) + ">", nil
}

// cmdFetch is FETCH and UID FETCH. ENVELOPE, BODYSTRUCTURE and section
// offsets come from the stored MIME index, top-level headers from the
// stored header block; bodies stream from the store's chunks into the
// response literal. Nothing is parsed again.
func (s *session) cmdFetch(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	set, err := c.d.NumSet(c.uid)
	if err != nil {
		return err
	}
	if err := c.d.SP(); err != nil {
		return err
	}
	req, err := parseFetch(c.d, c.uid)
	if err != nil {
		return err
	}
	if c.d.PeekIs(' ') {
		c.d.SP() //nolint:errcheck // peeked
		if err := req.modifiers(c.d); err != nil {
			return err
		}
	}
	if err := c.end(); err != nil {
		return err
	}
	if req.vanished && (!c.uid || !s.qresync) {
		return bad("VANISHED needs UID FETCH with QRESYNC enabled")
	}
	if req.has(fetchModSeq) {
		s.enableCondstore()
	}
	if s.uidonly && req.autoUID {
		req.items = req.items[1:] // UIDFETCH carries it
	} else if s.qresync && !req.has(fetchUID) {
		// RFC 7162 §3.2.4: every FETCH response carries the UID then.
		req.items = append([]fetchItem{{kind: fetchUID, name: "UID"}}, req.items...)
	}
	sel := s.sel
	refs, err := sel.refs(set, s.searchRes)
	if err != nil {
		return err
	}
	if req.hasChangedSince {
		if refs, err = s.changedSince(sel, set, refs, req); err != nil {
			return err
		}
	}
	refs = req.partial.refs(refs)
	refs = s.limitFetch(c, refs)
	if len(refs) == 0 {
		return nil
	}
	// Implicit \Seen (RFC 9051 §6.4.5), before reading, so that the FLAGS
	// written below already include it.
	seen := map[uint32]bool{}
	if !sel.readOnly && req.setsSeen() {
		changed, err := s.srv.st.StoreFlags(s.ctx, s.accountID(), s.mailbox.ID, refRanges(refs), store.FlagsAdd, []string{store.FlagSeen})
		if err != nil {
			return storeError(err, "FETCH")
		}
		for _, ch := range changed {
			seen[ch.UID] = true
		}
		s.srv.feed.applyOwnFlags(s.ctx, s.mailbox, changed)
	}
	fo := store.FetchOptions{}
	bodies := false
	for _, it := range req.items {
		switch it.kind {
		case fetchEnvelope, fetchBody, fetchBodyStructure:
			fo.Structure = true
		case fetchSection:
			sec := it.section
			if len(sec.Part) > 0 || sec.Specifier == imap.PartSpecifierMIME {
				fo.Structure = true
			} else if sec.Specifier != imap.PartSpecifierNone {
				fo.Header = true // HEADER, HEADER.FIELDS(.NOT), TEXT of the message
			}
			if sec.Specifier != imap.PartSpecifierHeader || len(sec.Part) > 0 {
				bodies = true
			}
		case fetchBinary, fetchBinarySize:
			bodies = bodies || it.kind == fetchBinary
			if len(it.part) > 0 {
				fo.Structure = true
			}
		}
	}
	// Small messages come whole with their metadata: no read per body.
	fo.Body = bodies
	f := &fetcher{s: s, sel: sel, req: req, seen: seen, structure: fo.Structure}
	batch := metaBatch
	switch {
	case bodies || fo.Header:
		batch = bodyBatch
	case fo.Structure:
		batch = structureBatch
	}
	// A message whose row is gone is left out silently, as before any of
	// its response starts (the existing behaviour clients and tests rely
	// on); one whose body is gone once its row was read gets NO.
	if err := s.forEachMeta(sel, refs, fo, batch, f.write); err != nil {
		return err
	}
	if f.expunged {
		// Dovecot's words, which clients (and imaptest) know.
		return no("EXPUNGEISSUED", "Some of the requested messages no longer exist")
	}
	return nil
}

// setsSeen reports whether the FETCH reads a body without .PEEK.
func (r *fetchRequest) setsSeen() bool {
	for _, it := range r.items {
		if (it.kind == fetchSection || it.kind == fetchBinary) && !it.peek {
			return true
		}
	}
	return false
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

// forEachMeta calls fn for the messages refs of the view (with their
// sequence numbers), reading their metadata n messages at a time. Each
// batch is read whole and its pool connection released before fn writes to
// the client, so a slow or stalled client never holds a database
// connection (and reading a body inside fn can take one of its own).
// Messages gone from the database meanwhile (expunged by a session the
// feed has not heard of yet) are skipped.
func (s *session) forEachMeta(sel *view, refs []msgRef, fo store.FetchOptions, n int, fn func(seq uint32, m *store.MessageMeta) error) error {
	for len(refs) > 0 {
		k := min(len(refs), n)
		batch, err := s.fetchMeta(s.ctx, sel, refs[:k], fo)
		if err != nil {
			return err
		}
		// Both ascending by UID: pair each row with its sequence number.
		j := 0
		for i := range batch {
			for j < k && refs[j].uid < batch[i].UID {
				j++
			}
			if j == k || refs[j].uid != batch[i].UID {
				continue
			}
			if err := fn(refs[j].seq, &batch[i]); err != nil {
				return err
			}
		}
		refs = refs[k:]
	}
	return nil
}

type fetcher struct {
	s    *session
	sel  *view
	req  *fetchRequest
	seen map[uint32]bool // \Seen set by this FETCH: FLAGS are included

	structure bool // the MIME index is needed
	// expunged says a message of the view was gone from the store when
	// its body was read (expunged by another session, not yet told):
	// its response was left out.
	expunged bool
}

// write writes the FETCH response of one message.
func (f *fetcher) write(seq uint32, m *store.MessageMeta) error {
	if f.structure && (m.Structure == nil || m.Structure.Root == nil) {
		return fmt.Errorf("message %d has no stored structure", m.MessageID)
	}
	// Locate every section before anything of this message is written:
	// a failure is then a plain tagged NO, not a broken response.
	sources := make([]source, len(f.req.items))
	for i, it := range f.req.items {
		var err error
		switch it.kind {
		case fetchSection:
			sources[i], err = f.bodySection(m, it.section)
		case fetchBinary:
			sources[i], err = binarySection(m, it.part, it.partial)
		case fetchBinarySize:
			sources[i], err = binarySection(m, it.part, nil)
		}
		if err == nil && it.kind != fetchBinarySize {
			err = f.open(m, &sources[i])
		}
		if errors.Is(err, store.ErrNotFound) {
			// Gone since the view was told of it: no response for it
			// rather than one cut off (tagged NO [EXPUNGEISSUED]).
			f.expunged = true
			return nil
		}
		if err != nil {
			return err
		}
	}
	flags := f.seen[m.UID]
	if flags || f.req.has(fetchFlags) {
		f.s.announce(m.Flags)
	}
	e := f.s.enc
	f.s.fetchHead(seq, m.UID)
	n := 0
	sp := func() {
		if n > 0 {
			e.SP()
		}
		n++
	}
	for i, it := range f.req.items {
		switch it.kind {
		case fetchUID:
			sp()
			e.Raw("UID ").Num(m.UID)
		case fetchFlags:
			sp()
			e.Raw("FLAGS ")
			f.s.flagList(m.UID, m.Flags)
		case fetchInternalDate:
			sp()
			e.Raw("INTERNALDATE ").Date(m.InternalDate)
		case fetchSize:
			sp()
			e.Raw("RFC822.SIZE ").Num64(uint64(m.Size))
		case fetchEnvelope:
			sp()
			e.Raw("ENVELOPE ")
			writeEnvelope(e, m.Structure.Envelope)
		case fetchBody, fetchBodyStructure:
			sp()
			e.Raw(it.name).SP()
			writeBodyStructure(e, m.Structure.Root, it.kind == fetchBodyStructure)
		case fetchBinarySize:
			sp()
			e.Raw(it.name).SP().Num64(uint64(min(sources[i].size, 1<<32-1)))
		case fetchModSeq:
			sp()
			e.Raw("MODSEQ (").Num64(m.ModSeq).Byte(')')
		case fetchSection, fetchBinary:
			sp()
			e.Raw(it.name).SP()
			if err := f.stream(m, sources[i], it.kind == fetchBinary); err != nil {
				return f.abort(err)
			}
		}
	}
	if flags && !f.req.has(fetchFlags) {
		sp()
		e.Raw("FLAGS ")
		f.s.flagList(m.UID, m.Flags)
	}
	if flags && f.s.condstore && !f.req.has(fetchModSeq) {
		// The flags changed: a CONDSTORE client learns their modseq.
		writeModSeq(e, m.ModSeq)
	}
	e.Raw(")").CRLF()
	if flags {
		f.sel.reported(m.UID, m.Flags, m.ModSeq)
	}
	return e.Err()
}

// abort ends the connection after a failure inside a literal: the response
// cannot be completed, and anything written after it would be read as part
// of the literal.
func (f *fetcher) abort(err error) error {
	f.s.log.Error("fetch: streaming a body failed; closing the connection", "err", err)
	f.s.conn.Close()
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
	r          io.Reader
}

// prefetchSize is how much of a body read from the store is read before
// its response starts.
const prefetchSize = 64 << 10

// open prepares a section read from the store, reading its first bytes
// now: a content gone since the view was told of the message (expunged,
// and collected) is then found before anything of its response is
// written (store.ErrNotFound), never in the middle of a literal.
func (f *fetcher) open(m *store.MessageMeta, src *source) error {
	if src.data != nil || src.size == 0 {
		return nil
	}
	length := src.end - src.start
	if src.encoding == "" {
		length = src.size
	}
	body := f.s.open(m, src.start, length)
	if m.Body == nil {
		buf := make([]byte, min(length, prefetchSize))
		if _, err := io.ReadFull(body, buf); err != nil {
			return err
		}
		body = io.MultiReader(bytes.NewReader(buf), body)
	}
	if src.encoding != "" {
		body = mimeindex.NewDecoder(src.encoding, body)
		if src.skip > 0 {
			if _, err := io.CopyN(io.Discard, body, src.skip); err != nil {
				return err
			}
		}
	}
	src.r = io.LimitReader(body, src.size)
	return nil
}

// stream writes a section's literal: a literal8 for BINARY, whose content
// may hold NUL.
func (f *fetcher) stream(m *store.MessageMeta, src source, binary bool) error {
	e := f.s.enc
	if src.data != nil || src.size == 0 {
		return e.Literal(src.size, bytes.NewReader(src.data[:src.size]), binary && src.size > 0)
	}
	return e.Literal(src.size, src.r, binary)
}

// open reads length bytes of a message from offset: from memory when
// FetchMeta brought the whole message (MessageMeta.Body), else from the
// store's chunks.
func (s *session) open(m *store.MessageMeta, offset, length int64) io.Reader {
	if m.Body != nil && offset+length <= int64(len(m.Body)) {
		return bytes.NewReader(m.Body[offset : offset+length])
	}
	return s.srv.st.OpenRange(s.ctx, s.accountID(), m.MessageID, offset, length)
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
	hdr, err := io.ReadAll(f.s.open(m, inner.HeaderStart, n))
	if err != nil {
		return source{}, fmt.Errorf("fetch: header of part %v of message %d: %w", sec.Part, m.MessageID, err)
	}
	return memSource(headerSection(hdr, sec), sec.Partial), nil
}

// errUnknownCTE answers BINARY of a part whose transfer encoding the server
// cannot decode (RFC 3516 §4.2).
var errUnknownCTE = no("UNKNOWN-CTE", "Unknown Content-Transfer-Encoding")

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
	for sc := headerscan.NewScanner(hdr); sc.Next(); {
		f := sc.Field()
		if !f.IsField() && (f.Raw[0] == ' ' || f.Raw[0] == '\t') {
			continue // continuation lines with no field: in no section
		}
		matched := false
		for _, h := range want {
			if f.Is(h) {
				matched = true
				break
			}
		}
		if matched == keep && (f.IsField() || !keep) {
			out.Write(f.Raw)
		}
	}
	out.WriteString("\r\n")
	return out.Bytes()
}
