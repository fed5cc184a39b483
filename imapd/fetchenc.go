package imapd

import (
	"slices"
	"strings"

	"github.com/mailstack/mailstack/imapd/imapwire"
	"github.com/mailstack/mailstack/internal/mimeindex"
)

// writeEnvelope writes an ENVELOPE (RFC 9051 §7.5.2) from the stored
// index: header values as they appear in the message (encoded words
// kept, as Dovecot sends them), Sender and Reply-To defaulting to From.
func writeEnvelope(e *imapwire.Encoder, env *mimeindex.Envelope) {
	if env == nil {
		env = &mimeindex.Envelope{}
	}
	sender, replyTo := env.Sender, env.ReplyTo
	if len(sender) == 0 {
		sender = env.From
	}
	if len(replyTo) == 0 {
		replyTo = env.From
	}
	e.Byte('(').NStr(env.Date).SP().NStr(env.Subject)
	for _, l := range [][]mimeindex.Address{env.From, sender, replyTo, env.To, env.Cc, env.Bcc} {
		e.SP()
		writeAddresses(e, l)
	}
	e.SP().NStr(env.InReplyTo).SP().NStr(env.MessageID).Byte(')')
}

func writeAddresses(e *imapwire.Encoder, l []mimeindex.Address) {
	if len(l) == 0 {
		e.Raw("NIL")
		return
	}
	e.Byte('(')
	for _, a := range l {
		e.Byte('(').NStr(a.Name).SP().NStr(a.Route).SP().NStr(a.Mailbox).SP().NStr(a.Host).Byte(')')
	}
	e.Byte(')')
}

// writeBodyStructure writes BODY (extended false) or BODYSTRUCTURE
// (extended true) of the part tree rooted at p. It follows Dovecot where
// the stored structure cannot be expressed as is:
//   - a multipart without children gets one empty text/plain child, since
//     IMAP requires at least one;
//   - a text part without charset parameter reports charset us-ascii;
//   - a message/rfc822 or message/global part whose body was not parsed
//     (e.g. base64-encoded) is reported as application/octet-stream,
//     because IMAP requires an envelope and body for message types.
func writeBodyStructure(e *imapwire.Encoder, p *mimeindex.Part, extended bool) {
	e.Byte('(')
	if p.Type == "multipart" {
		if len(p.Children) == 0 {
			writeBodyStructure(e, &mimeindex.Part{HeaderStart: p.End, BodyStart: p.End, End: p.End,
				Type: "text", Subtype: "plain", Encoding: "7BIT"}, extended)
		}
		for _, c := range p.Children {
			// No SP between the parts (RFC 9051 body-type-mpart);
			// Outlook for iOS chokes on one.
			writeBodyStructure(e, c, extended)
		}
		e.SP().Text(p.Subtype)
		if extended {
			e.SP()
			writeParams(e, p.Params, "")
			e.SP()
			writeExtension(e, p)
		}
		e.Byte(')')
		return
	}
	typ, sub := p.Type, p.Subtype
	message := isMessagePart(p)
	if !message && (typ == "message" && (sub == "rfc822" || sub == "global")) {
		typ, sub = "application", "octet-stream"
	}
	enc := strings.ToLower(p.Encoding)
	if enc == "" {
		enc = "7bit"
	}
	e.Text(typ).SP().Text(sub).SP()
	charset := ""
	if typ == "text" {
		if _, ok := p.Params["charset"]; !ok {
			charset = "us-ascii"
		}
	}
	writeParams(e, p.Params, charset)
	e.SP().NStr(p.ID).SP().NStr(p.Description).SP().Text(enc).SP().Num64(uint64(max(p.End-p.BodyStart, 0)))
	switch {
	case message:
		e.SP()
		writeEnvelope(e, p.Envelope)
		e.SP()
		writeBodyStructure(e, p.Children[0], extended)
		e.SP().Num64(uint64(p.BodyLines))
	case typ == "text":
		e.SP().Num64(uint64(p.BodyLines))
	}
	if extended {
		e.SP().NStr(p.MD5).SP()
		writeExtension(e, p)
	}
	e.Byte(')')
}

// writeExtension writes body-fld-dsp, body-fld-lang and body-fld-loc.
func writeExtension(e *imapwire.Encoder, p *mimeindex.Part) {
	if p.Disposition == "" {
		e.Raw("NIL")
	} else {
		e.Byte('(').Text(p.Disposition).SP()
		writeParams(e, p.DispositionParams, "")
		e.Byte(')')
	}
	e.SP()
	switch len(p.Language) {
	case 0:
		e.Raw("NIL")
	default:
		e.Byte('(')
		for i, l := range p.Language {
			if i > 0 {
				e.SP()
			}
			e.Text(l)
		}
		e.Byte(')')
	}
	e.SP().NStr(p.Location)
}

// writeParams writes a parameter list, keys sorted; charset, if set, is
// added as the charset parameter's value.
func writeParams(e *imapwire.Encoder, params map[string]string, charset string) {
	if len(params) == 0 && charset == "" {
		e.Raw("NIL")
		return
	}
	keys := make([]string, 0, len(params)+1)
	for k := range params {
		keys = append(keys, k)
	}
	if charset != "" {
		keys = append(keys, "charset")
	}
	slices.Sort(keys)
	e.Byte('(')
	for i, k := range keys {
		if i > 0 {
			e.SP()
		}
		v, ok := params[k]
		if !ok {
			v = charset
		}
		e.Text(k).SP().Text(v)
	}
	e.Byte(')')
}
