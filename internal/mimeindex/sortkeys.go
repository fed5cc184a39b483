package mimeindex

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/mailstack/mailstack/internal/headerscan"
)

// SortKeysVersion is the version of the rules behind SortKeys; stored keys
// of an older version are recomputed (store's backfill).
const SortKeysVersion = 1

// maxReferences bounds the message identifiers kept of a References field
// (the nearest ancestors are at its end, so the last ones are kept).
const maxReferences = 100

// SortKeys are what IMAP SORT (RFC 5256, RFC 5957) and THREAD order and
// group a message by, computed once from its top-level header. Strings to
// compare are canonicalised for i;unicode-casemap (Casemap), so that a
// byte-wise comparison orders them as RFC 5051 says.
type SortKeys struct {
	// SentDate is the Date: field, zero if missing or unparsable (SORT
	// then uses the internal date).
	SentDate time.Time
	// Subject is the base subject (BaseSubject), casemapped; Reply says
	// the subject was a reply or forward.
	Subject string
	Reply   bool
	// From, To and Cc are the addr-mailbox of the field's first address
	// (a group's name for a group), casemapped; empty if none.
	From, To, Cc string
	// DisplayFrom and DisplayTo are the display name of the first address,
	// RFC 2047-decoded, or its addr-spec if it has none (RFC 5957),
	// casemapped.
	DisplayFrom, DisplayTo string
	// MessageID is the first valid message identifier of Message-ID:,
	// without angle brackets ("" if none). References are the
	// identifiers of References:, or else the first of In-Reply-To:,
	// separated by single spaces (RFC 5256 §2.2 step 1).
	MessageID  string
	References string
}

// Keys computes the sort keys of a message from its envelope and its
// top-level header block (for References:, which the envelope lacks).
func Keys(env *Envelope, header []byte) SortKeys {
	if env == nil {
		env = &Envelope{}
	}
	var k SortKeys
	k.SentDate = ParseDate(env.Date)
	base, reply := BaseSubject(env.Subject)
	k.Subject, k.Reply = Casemap(base), reply
	k.From = Casemap(firstMailbox(env.From))
	k.To = Casemap(firstMailbox(env.To))
	k.Cc = Casemap(firstMailbox(env.Cc))
	k.DisplayFrom = Casemap(display(env.From))
	k.DisplayTo = Casemap(display(env.To))
	if ids := MessageIDs(env.MessageID); len(ids) > 0 {
		k.MessageID = ids[0]
	}
	refs := MessageIDs(LastField(header, "references"))
	if len(refs) == 0 {
		refs = MessageIDs(env.InReplyTo)
		if len(refs) > 1 {
			refs = refs[:1]
		}
	}
	if len(refs) > maxReferences {
		refs = refs[len(refs)-maxReferences:]
	}
	k.References = strings.Join(refs, " ")
	return k
}

func firstMailbox(l []Address) string {
	if len(l) == 0 {
		return ""
	}
	return l[0].Mailbox
}

// display is RFC 5957's display name of the first address: its decoded
// display name, else its addr-spec (a group's name for a group).
func display(l []Address) string {
	if len(l) == 0 {
		return ""
	}
	a := l[0]
	if a.Name != "" {
		return forHumans(DecodeWords(a.Name))
	}
	if a.Host == "" {
		return a.Mailbox
	}
	return a.Mailbox + "@" + a.Host
}

// LastField returns the unfolded value of the last field called name in a
// raw header block, "" if there is none: the value the envelope keeps of a
// repeated field (its Date, for one).
func LastField(header []byte, name string) string {
	var val []byte
	for s := headerscan.NewScanner(header); s.Next(); {
		if f := s.Field(); f.Is(name) {
			val = f.Value
		}
	}
	return unfold(val)
}

// MessageIDs returns the valid message identifiers ("<left@right>") of a
// Message-ID, In-Reply-To or References value, without angle brackets
// and white space (folding may split one). Comments and text between
// identifiers are skipped, as are bracketed strings without "@".
func MessageIDs(s string) []string {
	var ids []string
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			return ids
		}
		s = s[i+1:]
		j := strings.IndexAny(s, "<>")
		if j < 0 {
			return ids
		}
		if s[j] == '<' {
			s = s[j:]
			continue
		}
		id := strings.Join(strings.Fields(s[:j]), "")
		s = s[j+1:]
		if at := strings.IndexByte(id, '@'); at > 0 && at < len(id)-1 {
			ids = append(ids, id)
		}
	}
}

// BaseSubject extracts the base subject of a raw Subject: value as RFC
// 5256 §2.1 defines it: encoded-words decoded, white space collapsed,
// "(fwd)" trailers, "Re:"/"Fw:"/"Fwd:" leaders with their "[blob]"s,
// leading blobs and "[fwd: ...]" wrappers removed. reply says a leader,
// trailer or wrapper of a reply or forward was removed (RFC 5256 §2.2
// step 5).
func BaseSubject(raw string) (base string, reply bool) {
	// (1) Decode, make every run of white space one space.
	s := collapseWSP(DecodeWords(raw))
	for {
		// (2) Remove trailing "(fwd)" and white space.
		for {
			t := strings.TrimRight(s, " ")
			if u, ok := cutSuffixFold(t, "(fwd)"); ok {
				s, reply = u, true
				continue
			}
			s = t
			break
		}
		// (3)-(5) Remove leaders and leading blobs until none is left.
		for changed := true; changed; {
			changed = false
			for {
				n, refwd := leader(s)
				if n == 0 {
					break
				}
				s, changed = s[n:], true
				reply = reply || refwd
			}
			if n := blob(s); n > 0 && n < len(s) {
				s, changed = s[n:], true
			}
		}
		// (6) "[fwd: ... ]" wraps a forwarded subject: unwrap and redo.
		if len(s) >= 6 && strings.EqualFold(s[:5], "[fwd:") && s[len(s)-1] == ']' {
			s, reply = s[5:len(s)-1], true
			continue
		}
		return s, reply
	}
}

// collapseWSP turns every run of spaces, tabs and line breaks into one
// space.
func collapseWSP(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			space = true
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	if space {
		b.WriteByte(' ')
	}
	return b.String()
}

func cutSuffixFold(s, suffix string) (string, bool) {
	if len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix) {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}

// blob returns the length of a subj-blob ("[" *BLOBCHAR "]" *WSP) at the
// start of s, 0 if there is none.
func blob(s string) int {
	if s == "" || s[0] != '[' {
		return 0
	}
	end := strings.IndexAny(s[1:], "[]")
	if end < 0 || s[1+end] != ']' {
		return 0
	}
	n := end + 2
	for n < len(s) && s[n] == ' ' {
		n++
	}
	return n
}

// leader returns the length of a subj-leader ((*subj-blob subj-refwd) /
// WSP) at the start of s, 0 if there is none; refwd says it was a
// "Re:"/"Fw:"/"Fwd:".
func leader(s string) (n int, refwd bool) {
	if s != "" && s[0] == ' ' {
		return 1, false
	}
	i := 0
	for {
		b := blob(s[i:])
		if b == 0 {
			break
		}
		i += b
	}
	if r := refwdLen(s[i:]); r > 0 {
		return i + r, true
	}
	return 0, false
}

// refwdLen returns the length of a subj-refwd (("re" / ("fw" ["d"]))
// *WSP [subj-blob] ":") at the start of s, 0 if there is none.
func refwdLen(s string) int {
	var i int
	switch {
	case len(s) >= 2 && strings.EqualFold(s[:2], "re"):
		i = 2
	case len(s) >= 3 && strings.EqualFold(s[:3], "fwd"):
		i = 3
	case len(s) >= 2 && strings.EqualFold(s[:2], "fw"):
		i = 2
	default:
		return 0
	}
	for i < len(s) && s[i] == ' ' {
		i++
	}
	i += blob(s[i:])
	if i < len(s) && s[i] == ':' {
		return i + 1
	}
	return 0
}

// Casemap canonicalises s for the i;unicode-casemap collation (RFC
// 5051): each character title-cased, then fully decomposed (NFKD), so
// that comparing the results byte-wise (UTF-8 order is code point order)
// compares the strings case-insensitively, as RFC 5051 orders them (an
// accented letter compares as its base letter followed by the accent). Invalid UTF-8 bytes are kept.
func Casemap(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToUpper(s) // title case is upper case in ASCII
	}
	// Title case again after decomposing: a decomposition (the ligature
	// "ﬁ" is "fi") may bring back lower case.
	return titleCase(norm.NFKD.String(titleCase(s)))
}

func titleCase(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			b = append(b, s[i])
			i++
			continue
		}
		b = utf8.AppendRune(b, unicode.ToTitle(r))
		i += size
	}
	return string(b)
}
