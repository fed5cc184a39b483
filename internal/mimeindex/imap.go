package mimeindex

import (
	"math"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// DecodedEnvelope is an envelope as the IMAP ENVELOPE data item carries it
// (RFC 3501 §7.4.2), following Dovecot 2.3: what an IMAP encoder writes
// field by field, without go-imap's imap.Envelope, which has no source
// route and parses the date. An empty string or a nil slice is NIL.
type DecodedEnvelope struct {
	// Date is the Date header value as written (unfolded, surrounding
	// white space trimmed): Dovecot sends it unparsed.
	Date string
	// Subject is the Subject header decoded from RFC 2047 encoded-words
	// to UTF-8, with runs of white space made one space and leading and
	// trailing white space removed (as Dovecot writes it "for humans").
	Subject string
	// From is the From header's address list.
	From []DecodedAddress
	// Sender and ReplyTo are their header's address list, or From when
	// the header is missing or holds no address (RFC 3501 §7.4.2).
	Sender, ReplyTo []DecodedAddress
	// To, Cc and Bcc are their header's address list.
	To, Cc, Bcc []DecodedAddress
	// InReplyTo and MessageID are the header values as written (unfolded,
	// trimmed), angle brackets and any comments included, as Dovecot
	// sends them.
	InReplyTo, MessageID string
}

// DecodedAddress is one element of an ENVELOPE address list: an address,
// a group start or a group end (RFC 3501 §7.4.2). An empty string is NIL,
// except for Mailbox, which is NIL exactly when GroupEnd is set.
type DecodedAddress struct {
	// Name is the display name decoded from RFC 2047 encoded-words to
	// UTF-8, white space collapsed like Subject.
	Name string
	// Route is the obsolete source route (the adl), e.g. "@a,@b" for
	// "<@a,@b:user@host>".
	Route string
	// Mailbox is the local part of an address or, at a group start, the
	// group name as written (possibly "", which is sent as "", not NIL).
	Mailbox string
	// Host is the domain of an address; it is NIL ("") exactly for group
	// starts and ends.
	Host string
	// GroupEnd marks the end of a group: every field is NIL.
	GroupEnd bool
}

// IsGroupStart reports whether a starts a group, whose name is Mailbox.
func (a DecodedAddress) IsGroupStart() bool { return a.Host == "" && !a.GroupEnd }

// Decoded returns the envelope as IMAP sends it; see DecodedEnvelope. A nil
// Envelope gives the all-NIL envelope.
func (e *Envelope) Decoded() DecodedEnvelope {
	if e == nil {
		return DecodedEnvelope{}
	}
	d := DecodedEnvelope{
		Date:      e.Date,
		Subject:   forHumans(DecodeWords(e.Subject)),
		From:      decodeAddresses(e.From),
		Sender:    decodeAddresses(e.Sender),
		ReplyTo:   decodeAddresses(e.ReplyTo),
		To:        decodeAddresses(e.To),
		Cc:        decodeAddresses(e.Cc),
		Bcc:       decodeAddresses(e.Bcc),
		InReplyTo: e.InReplyTo,
		MessageID: e.MessageID,
	}
	if len(d.Sender) == 0 {
		d.Sender = d.From
	}
	if len(d.ReplyTo) == 0 {
		d.ReplyTo = d.From
	}
	return d
}

// decodeAddresses converts stored addresses; group markers are told apart
// by alternation, since a group with an empty name starts with a zero
// Address like its end.
func decodeAddresses(l []Address) []DecodedAddress {
	if len(l) == 0 {
		return nil
	}
	out := make([]DecodedAddress, len(l))
	inGroup := false
	for i, a := range l {
		switch {
		case a.Host != "":
			out[i] = DecodedAddress{Name: forHumans(DecodeWords(a.Name)), Route: a.Route, Mailbox: a.Mailbox, Host: a.Host}
		case inGroup:
			out[i] = DecodedAddress{GroupEnd: true}
			inGroup = false
		default:
			out[i] = DecodedAddress{Mailbox: a.Mailbox}
			inGroup = true
		}
	}
	return out
}

// forHumans makes each run of white space (line breaks and tabs included)
// one space and drops it at both ends, as Dovecot does for the subject
// and display names of ENVELOPE.
func forHumans(s string) string {
	if !strings.ContainsAny(s, "\t\r\n") && !strings.Contains(s, "  ") &&
		(s == "" || s[0] != ' ' && s[len(s)-1] != ' ') {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\r' || r == '\n'
	}), " ")
}

// IMAP returns the envelope as go-imap wants it: Decoded with the date
// parsed leniently (zero if unparsable) and message identifiers without
// angle brackets. go-imap has no field for source routes, so they are
// dropped. Group names are kept raw because go-imap writes the mailbox
// field without encoding.
func (e *Envelope) IMAP() *imap.Envelope {
	d := e.Decoded()
	env := &imap.Envelope{
		Date:      ParseDate(d.Date),
		Subject:   d.Subject,
		From:      imapAddresses(d.From),
		Sender:    imapAddresses(d.Sender),
		ReplyTo:   imapAddresses(d.ReplyTo),
		To:        imapAddresses(d.To),
		Cc:        imapAddresses(d.Cc),
		Bcc:       imapAddresses(d.Bcc),
		InReplyTo: msgIDs(d.InReplyTo),
	}
	if ids := msgIDs(d.MessageID); len(ids) > 0 {
		env.MessageID = ids[0]
	}
	return env
}

func imapAddresses(l []DecodedAddress) []imap.Address {
	if len(l) == 0 {
		return nil
	}
	out := make([]imap.Address, len(l))
	for i, a := range l {
		out[i] = imap.Address{Name: a.Name, Mailbox: a.Mailbox, Host: a.Host}
	}
	return out
}

// msgIDs extracts "<id>" message identifiers, without brackets. A value
// without brackets is taken as one identifier, as is.
func msgIDs(s string) []string {
	var ids []string
	rest := s
	for {
		i := strings.IndexByte(rest, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '>')
		if j < 0 {
			break
		}
		if id := strings.TrimSpace(rest[i+1 : i+j]); id != "" {
			ids = append(ids, id)
		}
		rest = rest[i+j+1:]
	}
	if len(ids) == 0 {
		if s = strings.TrimSpace(s); s != "" {
			ids = append(ids, s)
		}
	}
	return ids
}

var dateLayouts = []string{
	"Mon, 2 Jan 2006 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05 MST",
	"Mon, 2 Jan 2006 15:04 -0700",
	"Mon, 2 Jan 2006 15:04:05",
	"2 Jan 2006 15:04:05 -0700",
	"2 Jan 2006 15:04:05 MST",
	"2 Jan 2006 15:04:05",
	"Mon, 2 Jan 06 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05 -0700 MST",
	"Mon, 2 January 2006 15:04:05 -0700",
	"Mon Jan 2 15:04:05 2006",
	"Mon Jan 2 15:04:05 MST 2006",
	"2006-01-02 15:04:05 -0700",
	time.RFC3339,
}

// ParseDate parses an RFC 5322 date, then tries common malformed variants
// (comments, missing zone, two-digit years, asctime). It returns the zero
// time if nothing fits.
func ParseDate(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	if t, err := mail.ParseDate(s); err == nil {
		return t
	}
	// Drop comments, commas' stray spacing and repeated white space.
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	norm := strings.Join(strings.Fields(strings.ReplaceAll(b.String(), ",", ", ")), " ")
	norm = strings.ReplaceAll(norm, " ,", ",")
	for _, layout := range dateLayouts {
		if t, err := time.Parse(layout, norm); err == nil {
			return t
		}
	}
	return time.Time{}
}

// BodyStructure converts the part tree rooted at p for FETCH BODY
// (extended false) or BODYSTRUCTURE (extended true). It follows Dovecot
// where the stored structure cannot be expressed as is:
//   - a multipart without children gets one empty text/plain child, since
//     IMAP requires at least one;
//   - a text part without charset parameter reports charset us-ascii;
//   - a message/rfc822 or message/global part whose body was not parsed
//     (e.g. base64-encoded) is reported as application/octet-stream,
//     because IMAP requires an envelope and body for message types.
//
// go-imap has no field for Content-MD5, so Part.MD5 is not reported.
func (p *Part) BodyStructure(extended bool) imap.BodyStructure {
	if p.Type == "multipart" {
		mp := &imap.BodyStructureMultiPart{Subtype: p.Subtype}
		for _, c := range p.Children {
			mp.Children = append(mp.Children, c.BodyStructure(extended))
		}
		if len(mp.Children) == 0 {
			mp.Children = append(mp.Children, p.emptyChild().BodyStructure(extended))
		}
		if extended {
			mp.Extended = &imap.BodyStructureMultiPartExt{
				Params:      p.Params,
				Disposition: p.disposition(),
				Language:    p.Language,
				Location:    p.Location,
			}
		}
		return mp
	}

	sp := &imap.BodyStructureSinglePart{
		Type:        p.Type,
		Subtype:     p.Subtype,
		Params:      p.Params,
		ID:          p.ID,
		Description: p.Description,
		Encoding:    p.Encoding,
		Size:        clampUint32(p.End - p.BodyStart),
	}
	switch {
	case p.isMessage():
		sp.MessageRFC822 = &imap.BodyStructureMessageRFC822{
			Envelope:      p.Envelope.IMAP(),
			BodyStructure: p.Children[0].BodyStructure(extended),
			NumLines:      p.BodyLines,
		}
	case isMessageType(p.Type, p.Subtype):
		sp.Type, sp.Subtype = "application", "octet-stream"
	case p.Type == "text":
		sp.Text = &imap.BodyStructureText{NumLines: p.BodyLines}
		if _, ok := p.Params["charset"]; !ok {
			params := make(map[string]string, len(p.Params)+1)
			for k, v := range p.Params {
				params[k] = v
			}
			params["charset"] = "us-ascii"
			sp.Params = params
		}
	}
	if extended {
		sp.Extended = &imap.BodyStructureSinglePartExt{
			Disposition: p.disposition(),
			Language:    p.Language,
			Location:    p.Location,
		}
	}
	return sp
}

func clampUint32(n int64) uint32 {
	if n < 0 {
		return 0
	}
	if n > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

func (p *Part) disposition() *imap.BodyStructureDisposition {
	if p.Disposition == "" {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: p.Disposition, Params: p.DispositionParams}
}

// isMessage reports whether p is an encapsulated message with a parsed body.
func (p *Part) isMessage() bool {
	return isMessageType(p.Type, p.Subtype) && len(p.Children) == 1
}

// emptyChild is the zero-length text/plain part standing in for the
// missing body part of an empty multipart.
func (p *Part) emptyChild() *Part {
	return &Part{
		HeaderStart: p.End, BodyStart: p.End, End: p.End,
		Type: "text", Subtype: "plain", Encoding: "7BIT",
	}
}

// Find returns the part designated by an IMAP section part number (RFC 3501
// §6.4.5), 1-based, or nil if there is none. p is normally Message.Root; an
// empty path returns p.
//
// As in RFC 3501, part 1 of a non-multipart entity is the entity itself,
// and the numbers following a message/rfc822 part address the parts of the
// encapsulated message. For the HEADER and TEXT specifiers of a
// message/rfc822 part m, use m.Children[0]: its header is
// [HeaderStart,BodyStart) and its text [BodyStart,End). MIME of any part is
// its [HeaderStart,BodyStart).
//
// Part 1 of a multipart without children is a zero-length text/plain part
// at the end of the multipart, matching BodyStructure.
func (p *Part) Find(path []int) *Part {
	cur := p
	for i, n := range path {
		if n < 1 {
			return nil
		}
		var next *Part
		switch {
		case cur.Type != "multipart":
			if n != 1 {
				return nil
			}
			next = cur
		case n <= len(cur.Children):
			next = cur.Children[n-1]
		case n == 1 && len(cur.Children) == 0:
			next = cur.emptyChild()
		default:
			return nil
		}
		if i < len(path)-1 && next.isMessage() {
			next = next.Children[0]
		}
		cur = next
	}
	return cur
}
