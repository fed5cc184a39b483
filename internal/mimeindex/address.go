package mimeindex

import "strings"

// Address lists are parsed the way Dovecot 2.3's message-address parser
// (with its "fill missing" option, as used for ENVELOPE and address
// searches) reads them, because IMAP clients and imaptest expect Dovecot's
// answers for malformed and obsolete syntax. net/mail is no help: it
// flattens groups, decodes display names and rejects a whole list for one
// bad address.
//
// The parser is a recursive descent over RFC 5322 with the obsolete forms
// of RFC 822. Its primitives return 1 when input remains, 0 at the end of
// the input and -1 on a syntax error; white space and comments (CFWS)
// after a token are skipped by the token's own parser.

const (
	missingMailbox = "MISSING_MAILBOX"
	missingDomain  = "MISSING_DOMAIN"
	syntaxError    = "SYNTAX_ERROR"  // domain of a broken <...> address
	invalidRoute   = "INVALID_ROUTE" // route of a broken <@route:...> address
)

// ParseAddressList parses an unfolded address-list header value (From, To,
// Cc, ...) into the Address form of Envelope. It never fails: malformed
// input gives addresses with MISSING_MAILBOX, MISSING_DOMAIN, SYNTAX_ERROR
// or INVALID_ROUTE parts, exactly where Dovecot 2.3 gives them. A value
// holding only white space and comments has no addresses.
//
// The strings returned are valid UTF-8 without NUL bytes (see Envelope).
func ParseAddressList(s string) []Address {
	return parseAddressList(clean(s))
}

// parseAddressList is ParseAddressList on a string that is already clean.
func parseAddressList(s string) []Address {
	p := addrParser{s: s}
	if p.skipCFWS() <= 0 {
		return nil
	}
	p.addressList()
	return p.out
}

// pendingAddr is the address being parsed. The has* flags stand for
// Dovecot's NULL pointers: a field set to "" differs from an absent one.
type pendingAddr struct {
	name, route, mailbox, domain             string
	hasName, hasRoute, hasMailbox, hasDomain bool
	invalid                                  bool
}

type addrParser struct {
	s   string
	pos int
	out []Address

	addr    pendingAddr
	str     strings.Builder // scratch value of the token being parsed
	comment strings.Builder // text of the last comment skipped
}

// more reports 1 if input remains, else 0.
func (p *addrParser) more() int {
	if p.pos < len(p.s) {
		return 1
	}
	return 0
}

// peek returns the current byte, or 0 at the end (the input has no NUL).
func (p *addrParser) peek() byte {
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

// isAtext reports whether c is RFC 5322 atext; 8-bit bytes count as atext
// so that UTF-8 names and addresses are atoms.
func isAtext(c byte) bool {
	if c >= 0x80 {
		return true
	}
	return c > ' ' && c < 0x7f && strings.IndexByte(`"(),.:;<>@[\]`, c) < 0
}

// appendUnfolded appends s to b without the line breaks of folding.
func appendUnfolded(b *strings.Builder, s string) {
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			b.WriteString(s)
			return
		}
		b.WriteString(strings.TrimSuffix(s[:i], "\r"))
		s = s[i+1:]
	}
}

// quotedText reads the body of a quoted string or comment up to the byte
// close (nesting parentheses when close is ')'), writing its unescaped,
// unfolded text to b. It returns the position of close, or -1 if the input
// ends first. A backslash before CR or LF is kept as is (obsolete syntax).
func (p *addrParser) quotedText(b *strings.Builder, close byte) int {
	level := 1
	start := p.pos
	for i := p.pos; i < len(p.s); i++ {
		switch c := p.s[i]; {
		case c == '(' && close == ')':
			level++
		case c == close:
			if level--; level == 0 {
				appendUnfolded(b, p.s[start:i])
				return i
			}
		case c == '\\':
			if i+1 >= len(p.s) {
				return -1
			}
			if n := p.s[i+1]; n != '\r' && n != '\n' {
				appendUnfolded(b, p.s[start:i])
				i++
				start = i // the escaped byte starts the next run
			}
		}
	}
	return -1
}

// skipComment skips the comment at p.pos ('('), keeping its text as the
// last comment (the display name of "user@host (Name)").
func (p *addrParser) skipComment() int {
	p.comment.Reset()
	p.pos++
	end := p.quotedText(&p.comment, ')')
	if end < 0 {
		p.pos = len(p.s)
		return -1
	}
	p.pos = end + 1
	return p.more()
}

// skipCFWS skips white space and comments.
func (p *addrParser) skipCFWS() int {
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case ' ', '\t', '\r', '\n':
			p.pos++
		case '(':
			if p.skipComment() < 0 {
				return -1
			}
		default:
			return 1
		}
	}
	return 0
}

// atom reads 1*atext (plus '.' if dots) into b, then skips CFWS. With dots
// set, an empty atom is allowed.
func (p *addrParser) atom(b *strings.Builder, dots bool) int {
	start := p.pos
	for p.pos < len(p.s) && (isAtext(p.s[p.pos]) || dots && p.s[p.pos] == '.') {
		p.pos++
	}
	if p.pos == start && !dots {
		return -1
	}
	b.WriteString(p.s[start:p.pos])
	return p.skipCFWS()
}

// dotAtom reads a dot-atom, allowing CFWS around the dots (RFC 822).
func (p *addrParser) dotAtom(b *strings.Builder) int {
	for {
		ret := p.atom(b, false)
		if ret <= 0 || p.s[p.pos] != '.' {
			return ret
		}
		p.pos++
		b.WriteByte('.')
		if p.skipCFWS() <= 0 {
			return -1
		}
	}
}

// quotedString reads the quoted string at p.pos ('"') into b, unquoted.
func (p *addrParser) quotedString(b *strings.Builder) int {
	p.pos++
	end := p.quotedText(b, '"')
	if end < 0 {
		p.pos = len(p.s)
		return -1
	}
	p.pos = end + 1
	return p.skipCFWS()
}

// phrase reads words (atoms with dots, or quoted strings), joined by one
// space, into b. It fails on a leading dot and returns 0 on empty input;
// anything else that is not a word ends it without error, so that the
// phrase may be empty ("<addr>" without display name).
func (p *addrParser) phrase(b *strings.Builder) int {
	if p.pos >= len(p.s) {
		return 0
	}
	if p.s[p.pos] == '.' {
		return -1
	}
	for {
		var ret int
		if p.s[p.pos] == '"' {
			ret = p.quotedString(b)
		} else {
			ret = p.atom(b, true)
		}
		if ret <= 0 {
			return ret
		}
		if c := p.s[p.pos]; !isAtext(c) && c != '"' && c != '.' {
			return p.skipCFWS()
		}
		b.WriteByte(' ')
	}
}

// domainLiteral reads "[...]" into b, brackets and backslashes included.
func (p *addrParser) domainLiteral(b *strings.Builder) int {
	start := p.pos
	for i := p.pos + 1; i < len(p.s); i++ {
		switch p.s[i] {
		case '[':
			return -1
		case ']':
			appendUnfolded(b, p.s[start:i+1])
			p.pos = i + 1
			return p.skipCFWS()
		case '\\':
			if i+1 >= len(p.s) {
				return -1
			}
			if n := p.s[i+1]; n != '\r' && n != '\n' {
				i++
			}
		}
	}
	return -1
}

// domain reads the domain after the '@' at p.pos into b.
func (p *addrParser) domain(b *strings.Builder) int {
	p.pos++
	if p.skipCFWS() <= 0 {
		return -1
	}
	if p.s[p.pos] == '[' {
		return p.domainLiteral(b)
	}
	return p.dotAtom(b)
}

// localDotAtom reads a local part leniently: leading, trailing and
// repeated dots are kept ("a..b", "a."), as Dovecot does by default.
func (p *addrParser) localDotAtom(b *strings.Builder) int {
	ret := -1
	for {
		for p.peek() == '.' {
			b.WriteByte('.')
			p.pos++
			if p.pos == len(p.s) {
				return 0
			}
			ret = 1
		}
		if p.peek() == '@' {
			return ret
		}
		if ret = p.atom(b, false); ret <= 0 || p.s[p.pos] != '.' {
			return ret
		}
	}
}

func (p *addrParser) localPart() int {
	parse := p.localDotAtom
	if p.s[p.pos] == '"' {
		parse = p.quotedString
	}
	return p.field(parse, &p.addr.mailbox, &p.addr.hasMailbox)
}

func (p *addrParser) addrDomain() int {
	return p.field(p.domain, &p.addr.domain, &p.addr.hasDomain)
}

// field runs parse on an empty p.str and, unless it fails, sets the
// address field to the text read (which p.str keeps).
func (p *addrParser) field(parse func(*strings.Builder) int, dst *string, has *bool) int {
	p.str.Reset()
	ret := parse(&p.str)
	if ret >= 0 {
		*dst, *has = p.str.String(), true
	}
	return ret
}

// route reads an obsolete source route "@a,@b" (commas and CFWS between
// the domains allowed) up to the ':'.
func (p *addrParser) route() int {
	p.str.Reset()
	for p.pos < len(p.s) && p.s[p.pos] == '@' {
		if p.str.Len() > 0 {
			p.str.WriteByte(',')
		}
		p.str.WriteByte('@')
		if ret := p.domain(&p.str); ret <= 0 {
			return ret
		}
		for p.skipCFWS() > 0 && p.s[p.pos] == ',' {
			p.pos++
		}
	}
	if p.pos >= len(p.s) {
		return 0
	}
	p.addr.route, p.addr.hasRoute = p.str.String(), true
	return 1
}

// angleAddr reads "<[route:]local@domain>" at p.pos ('<').
func (p *addrParser) angleAddr() int {
	p.pos++
	if p.skipCFWS() <= 0 {
		return -1
	}
	if p.s[p.pos] == '@' {
		if p.route() > 0 && p.s[p.pos] == ':' {
			p.pos++
		} else {
			p.addr.route, p.addr.hasRoute = invalidRoute, true
			if p.pos >= len(p.s) {
				return -1
			}
		}
		if p.skipCFWS() <= 0 {
			return -1
		}
	}
	if p.s[p.pos] != '>' { // "<>" has neither part
		if p.localPart() <= 0 {
			return -1
		}
		if p.s[p.pos] == '@' && p.addrDomain() <= 0 {
			return -1
		}
	}
	if p.peek() != '>' {
		return -1
	}
	p.pos++
	return p.skipCFWS()
}

// nameAddr reads "[phrase] <...>"; it fails (-1) without consuming an
// address if there is no '<' after the phrase.
func (p *addrParser) nameAddr() int {
	p.str.Reset()
	if p.phrase(&p.str) <= 0 || p.s[p.pos] != '<' {
		return -1
	}
	if name := p.str.String(); name != "" {
		p.addr.name, p.addr.hasName = name, true
	}
	if p.angleAddr() < 0 {
		p.addr.domain, p.addr.hasDomain = syntaxError, true
		p.addr.invalid = true
	}
	return p.more()
}

// addrSpec reads "local@domain", taking the last comment seen as display
// name. Without '@' and comment, words after the first make the whole a
// display name ("Just A Name").
func (p *addrParser) addrSpec() int {
	p.comment.Reset()
	quoted := p.s[p.pos] == '"'
	ret := p.localPart()
	if ret <= 0 {
		p.addr.invalid = true
	}
	sawDomain := false
	if ret != 0 && p.peek() == '@' {
		sawDomain = true
		if ret2 := p.addrDomain(); ret2 <= 0 {
			ret = ret2
		}
	}
	switch {
	case p.comment.Len() > 0:
		p.addr.name, p.addr.hasName = p.comment.String(), true
	case !sawDomain:
		p.str.WriteByte(' ') // p.str still holds the local part
		n := p.str.Len()
		p.phrase(&p.str)
		if p.str.Len() != n {
			p.addr.mailbox, p.addr.hasMailbox = "", false
			p.addr.name, p.addr.hasName = p.str.String(), true
		} else if !quoted {
			p.addr.domain, p.addr.hasDomain = "", true
		}
		p.addr.invalid = true
		ret = -1
	}
	return ret
}

func (p *addrParser) mailbox() int {
	start := p.pos
	ret := p.nameAddr()
	if ret < 0 {
		p.pos = start
		ret = p.addrSpec()
		if a := &p.addr; a.invalid && !a.hasName && a.hasMailbox && !a.hasDomain {
			// A lone quoted string: a name rather than a local part.
			a.name, a.hasName = a.mailbox, true
			a.mailbox, a.hasMailbox = "", false
		}
	}
	p.addFilled()
	return ret
}

// group reads "phrase: [mailbox-list] ;", emitting a start marker, the
// members and an end marker. It fails (-1) without consuming anything if
// there is no ':' after the phrase; once the ':' is seen it always ends
// the group, even on broken input.
func (p *addrParser) group() int {
	p.str.Reset()
	if p.phrase(&p.str) <= 0 || p.s[p.pos] != ':' {
		return -1
	}
	p.pos++
	ret := p.skipCFWS()
	p.out = append(p.out, Address{Mailbox: p.str.String()})
	if ret > 0 && p.s[p.pos] != ';' {
		for len(p.out) < maxAddresses {
			p.mailbox() // a broken member does not end the group
			if p.peek() != ',' {
				break
			}
			p.pos++
			if p.skipCFWS() <= 0 {
				ret = -1
				break
			}
		}
	}
	if ret >= 0 {
		if p.peek() != ';' {
			ret = -1
		} else {
			p.pos++
			ret = p.skipCFWS()
		}
	}
	p.out = append(p.out, Address{})
	if ret == 0 {
		return 0
	}
	return 1
}

func (p *addrParser) addressList() {
	for len(p.out) < maxAddresses {
		start := p.pos
		ret := p.group()
		if ret < 0 {
			p.pos = start
			ret = p.mailbox()
		}
		if ret == 0 || p.peek() != ',' {
			return
		}
		p.pos++
		if ret := p.skipCFWS(); ret <= 0 {
			if ret < 0 {
				p.addFilled() // an unterminated comment after the last comma
			}
			return
		}
	}
}

// addFilled emits the pending address with MISSING_MAILBOX and
// MISSING_DOMAIN standing for absent parts.
func (p *addrParser) addFilled() {
	a := p.addr
	p.addr = pendingAddr{}
	if !a.hasMailbox {
		a.mailbox = missingMailbox
	}
	if a.domain == "" {
		a.domain = missingDomain
	}
	p.out = append(p.out, Address{Name: a.name, Route: a.route, Mailbox: a.mailbox, Host: a.domain})
}

// FormatAddressList writes an address list in the normalized form Dovecot
// matches the FROM, TO, CC and BCC search keys against:
// `"Display Name" <@route:local@domain>` (the brackets even without a
// name), `group: member, member;`, entries separated by ", ". Names and
// local parts are quoted only when they need it; names holding an RFC 2047
// encoded-word are left unquoted so that they can still be decoded.
func FormatAddressList(list []Address) string {
	var b []byte
	first, inGroup := true, false
	for _, a := range list {
		if !first {
			b = append(b, ", "...)
		}
		first = false
		if a.Host == "" { // a group marker; starts and ends alternate
			if !inGroup {
				switch {
				case a.Mailbox == "":
					b = append(b, `""`...)
				default:
					b = appendPhrase(b, a.Mailbox)
				}
				b = append(b, ": "...)
				first = true
			} else {
				// Replace the ", " after the last member, or the space of
				// an empty group's ": ".
				switch {
				case len(b) >= 2 && b[len(b)-2] == ',' && b[len(b)-1] == ' ':
					b = b[:len(b)-2]
				case len(b) >= 2 && b[len(b)-2] == ':' && b[len(b)-1] == ' ':
					b = b[:len(b)-1]
				}
				b = append(b, ';')
			}
			inGroup = !inGroup
			continue
		}
		if a.Name != "" {
			b = appendPhrase(b, a.Name)
			b = append(b, ' ')
		}
		b = append(b, '<')
		if a.Route != "" {
			b = append(b, a.Route...)
			b = append(b, ':')
		}
		if a.Mailbox == "" {
			b = append(b, `""`...)
		} else {
			b = appendMaybeQuoted(b, a.Mailbox, false)
		}
		b = append(b, '@')
		b = append(b, a.Host...)
		b = append(b, '>')
	}
	return string(b)
}

// appendPhrase writes a display or group name, unquoted if it holds an
// encoded-word (which must not appear inside a quoted string).
func appendPhrase(b []byte, s string) []byte {
	if strings.Contains(s, "=?") {
		return append(b, s...)
	}
	return appendMaybeQuoted(b, s, true)
}

// appendMaybeQuoted writes s as is if it is all atext (dots allowed unless
// quoteDot), else as a quoted string escaping double quotes,
// backslashes and apostrophes.
func appendMaybeQuoted(b []byte, s string, quoteDot bool) []byte {
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		plain = isAtext(s[i]) || !quoteDot && s[i] == '.'
	}
	if plain {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c == '\'' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}
