package mimeindex

import (
	"math"
	"strings"

	"github.com/emersion/go-imap/v2"
)

// go-imap's forms of the stored structure, for the tests only: they check
// the index against go-imap's own parser (TestAgainstGoIMAP) and the rules
// IMAP imposes on a part tree. The server writes ENVELOPE and BODYSTRUCTURE
// itself (imapd/fetchenc.go), so the package does not depend on go-imap.

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
