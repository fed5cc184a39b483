package store

import (
	"fmt"
	"slices"
	"strings"
)

// System flag bits as stored in mailbox_messages.flags.
const (
	flagAnswered = 1 << iota
	flagSeen
	flagFlagged
	flagDeleted
	flagDraft
)

var systemFlags = []struct {
	bit  int
	name string
}{
	{flagAnswered, `\Answered`},
	{flagSeen, `\Seen`},
	{flagFlagged, `\Flagged`},
	{flagDeleted, `\Deleted`},
	{flagDraft, `\Draft`},
}

// Flag names understood by the store, as IMAP spells them.
const (
	FlagSeen    = `\Seen`
	FlagDeleted = `\Deleted`
)

// parseFlags splits IMAP flags into system flag bits and a sorted,
// de-duplicated keyword list. \Recent is ignored (it cannot be set); other
// unknown backslash flags are invalid. Keywords are case-insensitive, as
// in Dovecot: of two spellings of one, the first is kept.
func parseFlags(flags []string) (int, []string, error) {
	bits := 0
	keywords := []string{}
	var seen map[string]bool // lowercased keywords
outer:
	for _, f := range flags {
		if strings.HasPrefix(f, `\`) {
			for _, sf := range systemFlags {
				if strings.EqualFold(f, sf.name) {
					bits |= sf.bit
					continue outer
				}
			}
			if strings.EqualFold(f, `\Recent`) {
				continue
			}
			return 0, nil, fmt.Errorf("%w: unknown system flag %s", ErrInvalid, f)
		}
		if !isAtom(f) {
			return 0, nil, fmt.Errorf("%w: bad keyword %q", ErrInvalid, f)
		}
		// A set, not a search of the list: one command may carry
		// thousands of keywords.
		if seen == nil {
			seen = map[string]bool{}
		}
		if k := strings.ToLower(f); !seen[k] {
			seen[k] = true
			keywords = append(keywords, f)
		}
	}
	slices.Sort(keywords)
	return bits, keywords, nil
}

// isAtom reports whether s is an IMAP atom (RFC 9051 §9: ATOM-CHAR is any
// CHAR, 7-bit, except atom-specials: "(", ")", "{", SP, CTL, "%", "*",
// DQUOTE, "\\" and "]"), as a keyword must be. Anything else (a
// non-ASCII space, say) could pass for a separator where keywords are
// listed: in a change notification, or to a client.
func isAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

// flagStrings is the inverse of parseFlags.
func flagStrings(bits int, keywords []string) []string {
	out := make([]string, 0, len(keywords)+2)
	for _, sf := range systemFlags {
		if bits&sf.bit != 0 {
			out = append(out, sf.name)
		}
	}
	return append(out, keywords...)
}

// counts is a change to a mailbox's cached counters.
type counts struct{ messages, unseen, deleted, size int64 }

func countsOf(bits int, size int64) counts {
	c := counts{messages: 1, size: size}
	if bits&flagSeen == 0 {
		c.unseen = 1
	}
	if bits&flagDeleted != 0 {
		c.deleted = 1
	}
	return c
}

func (c *counts) add(o counts) {
	c.messages += o.messages
	c.unseen += o.unseen
	c.deleted += o.deleted
	c.size += o.size
}

func (c *counts) sub(o counts) {
	c.messages -= o.messages
	c.unseen -= o.unseen
	c.deleted -= o.deleted
	c.size -= o.size
}
