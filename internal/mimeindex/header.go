package mimeindex

import (
	"bytes"
	"io"
	"mime"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"

	"github.com/mailstack/mailstack/internal/headerscan"
)

func trimWSP(b []byte) []byte {
	return bytes.Trim(b, " \t")
}

// unfold removes the line breaks of a folded header value (RFC 5322 §2.2.3),
// trims surrounding white space and makes the result storable (see clean).
func unfold(v []byte) string {
	return clean(string(trimWSP(headerscan.Unfold(v))))
}

// clean returns s as valid UTF-8 without NUL bytes: bytes that are not part
// of valid UTF-8 are taken as ISO-8859-1 (the most common 8-bit header
// charset in the wild) and NULs are dropped, because encoding/json would
// replace invalid bytes with U+FFFD and PostgreSQL jsonb rejects \u0000.
func clean(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			b.WriteRune(rune(s[i]))
			n = 1
		case r == 0:
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// applyHeader fills p's MIME fields from ix.fields and returns the
// multipart boundary (empty unless p is a multipart).
func (ix *indexer) applyHeader(p *Part, defType, defSub string) string {
	p.Type, p.Subtype = defType, defSub
	if v, ok := ix.get("content-type"); ok {
		mt, params := parseParams(v)
		if t, s, ok := splitMediaType(mt); ok {
			p.Type, p.Subtype = t, s
		}
		// RFC 2045 §5.2: a syntactically invalid Content-Type means the
		// default type; the parameters are still kept.
		p.Params = params
	}
	boundary := ""
	if p.Type == "multipart" {
		boundary = strings.TrimRight(p.Params["boundary"], " \t")
		if boundary == "" {
			// A multipart without boundary is unusable: treat it as an
			// invalid Content-Type, i.e. the default type, so that its
			// body stays reachable as a leaf.
			p.Type, p.Subtype = defType, defSub
		}
	}

	p.Encoding = "7BIT"
	if v, ok := ix.get("content-transfer-encoding"); ok {
		if i := strings.IndexAny(v, " \t;("); i >= 0 {
			v = v[:i]
		}
		if v != "" {
			p.Encoding = strings.ToUpper(v)
		}
	}
	p.ID, _ = ix.get("content-id")
	p.Description, _ = ix.get("content-description")
	p.Location, _ = ix.get("content-location")
	p.MD5, _ = ix.get("content-md5")
	if v, ok := ix.get("content-disposition"); ok {
		d, params := parseParams(v)
		p.Disposition, p.DispositionParams = strings.ToLower(d), params
	}
	if v, ok := ix.get("content-language"); ok {
		for _, l := range strings.Split(v, ",") {
			if l = strings.TrimSpace(l); l != "" {
				p.Language = append(p.Language, l)
			}
		}
	}
	return boundary
}

// splitMediaType splits a "type/subtype" value, requiring both to be
// RFC 2045 tokens.
func splitMediaType(mt string) (string, string, bool) {
	t, s, ok := strings.Cut(strings.ToLower(mt), "/")
	if !ok || !isToken(t) || !isToken(s) {
		return "", "", false
	}
	return t, s, true
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return false
		}
	}
	return true
}

type rawParam struct {
	key   string // lowercase, as written (may carry RFC 2231 "*n*")
	value string
}

// parseParams parses a "value; k=v; ..." header (Content-Type,
// Content-Disposition) leniently: a bad parameter is skipped instead of
// invalidating the others, unquoted values may contain tspecials, the first
// of duplicate parameters wins, and RFC 2231 values in any charset known to
// go-message/charset are decoded. mime.ParseMediaType is not used because
// it rejects the whole list on one bad parameter and drops RFC 2231 values
// in charsets other than UTF-8 and US-ASCII.
func parseParams(v string) (string, map[string]string) {
	value, rest, _ := strings.Cut(v, ";")
	value = strings.TrimSpace(value)
	var raw []rawParam
	for len(rest) > 0 && len(raw) < 256 {
		rest = strings.TrimLeft(rest, " \t;")
		if rest == "" {
			break
		}
		eq := strings.IndexAny(rest, "=;")
		if eq < 0 || rest[eq] == ';' {
			// No value: skip this junk.
			if eq < 0 {
				break
			}
			rest = rest[eq:]
			continue
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			val = b.String()
			rest = rest[min(i+1, len(rest)):]
			if j := strings.IndexByte(rest, ';'); j >= 0 {
				rest = rest[j:]
			} else {
				rest = ""
			}
		} else {
			j := strings.IndexByte(rest, ';')
			if j < 0 {
				j = len(rest)
			}
			val = strings.TrimRight(rest[:j], " \t")
			rest = rest[j:]
		}
		if key != "" {
			raw = append(raw, rawParam{key, val})
		}
	}
	return value, assembleParams(raw)
}

// assembleParams merges RFC 2231 continuations and decodes values. An
// RFC 2231 form takes precedence over a plain parameter of the same name,
// since senders add the plain one as a fallback for old clients.
func assembleParams(raw []rawParam) map[string]string {
	if len(raw) == 0 {
		return nil
	}
	params := make(map[string]string)
	type section struct {
		n    int
		ext  bool
		text string
	}
	var sections map[string][]section
	for _, p := range raw {
		base, suffix, star := strings.Cut(p.key, "*")
		if !star {
			if _, dup := params[base]; !dup {
				params[base] = p.value
			}
			continue
		}
		sec := section{ext: strings.HasSuffix(suffix, "*") || suffix == "", text: p.value}
		num := strings.TrimSuffix(suffix, "*")
		if num != "" {
			n, err := strconv.Atoi(num)
			if err != nil || n < 0 || n > 1000 {
				continue
			}
			sec.n = n
		}
		if sections == nil {
			sections = make(map[string][]section)
		}
		sections[base] = append(sections[base], sec)
	}
	for base, secs := range sections {
		sort.SliceStable(secs, func(i, j int) bool { return secs[i].n < secs[j].n })
		var buf []byte
		cs := ""
		for i, sec := range secs {
			if sec.n != i {
				break // gap or duplicate: stop at what is contiguous
			}
			text := sec.text
			if sec.ext {
				if i == 0 {
					// charset'language'value
					if c, r, ok := strings.Cut(text, "'"); ok {
						if _, r, ok := strings.Cut(r, "'"); ok {
							cs, text = c, r
						}
					}
				}
				buf = append(buf, percentDecode(text)...)
			} else {
				buf = append(buf, text...)
			}
		}
		if len(secs) > 0 && secs[0].n == 0 {
			params[base] = toUTF8(cs, buf)
		}
	}
	if len(params) == 0 {
		return nil
	}
	out := make(map[string]string, len(params))
	for k, v := range params {
		if k != "boundary" {
			v = DecodeWords(v)
		}
		out[clean(k)] = clean(v)
	}
	return out
}

func percentDecode(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return b
}

// toUTF8 converts b from charset cs; unknown charsets and conversion errors
// leave the bytes as they are (clean makes them storable).
func toUTF8(cs string, b []byte) string {
	switch strings.ToLower(cs) {
	case "", "utf-8", "utf8", "us-ascii":
		return string(b)
	}
	r, err := charset.Reader(cs, bytes.NewReader(b))
	if err != nil {
		return string(b)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return string(b)
	}
	return string(out)
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// DecodeWords decodes RFC 2047 encoded-words; on failure (e.g. unknown
// charset) s is returned unchanged.
func DecodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return clean(d)
}

// envelope extracts the envelope fields from ix.fields. As in Dovecot, a
// repeated address field adds its addresses to the list (so that no copy
// can hide from a check or a search) and of other repeated fields the
// last one counts.
func (ix *indexer) envelope() *Envelope {
	e := &Envelope{}
	strs := [...]struct {
		name string
		dst  *string
	}{{"date", &e.Date}, {"subject", &e.Subject}, {"in-reply-to", &e.InReplyTo}, {"message-id", &e.MessageID}}
	lists := [...]struct {
		name string
		dst  *[]Address
	}{{"from", &e.From}, {"sender", &e.Sender}, {"reply-to", &e.ReplyTo}, {"to", &e.To}, {"cc", &e.Cc}, {"bcc", &e.Bcc}}
	for _, f := range ix.fields {
		for _, s := range strs {
			if f.Is(s.name) {
				*s.dst = unfold(f.Value)
			}
		}
		for _, l := range lists {
			if f.Is(l.name) && len(*l.dst) < maxAddresses {
				*l.dst = append(*l.dst, parseAddressList(unfold(f.Value))...)
			}
		}
	}
	return e
}
