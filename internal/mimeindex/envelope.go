package mimeindex

import (
	"net/mail"
	"strings"
	"time"

	"github.com/mailstack/mailstack/internal/headerscan"
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
	norm := strings.Join(strings.Fields(strings.ReplaceAll(headerscan.StripComments(s), ",", ", ")), " ")
	norm = strings.ReplaceAll(norm, " ,", ",")
	for _, layout := range dateLayouts {
		if t, err := time.Parse(layout, norm); err == nil {
			return t
		}
	}
	return time.Time{}
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
// at the end of the multipart, as BODYSTRUCTURE reports it.
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
