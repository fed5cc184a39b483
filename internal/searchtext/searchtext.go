// Package searchtext is what IMAP SEARCH's string keys (BODY, TEXT,
// HEADER, FROM, SUBJECT …) match against, in one place so the scan and the
// text index agree by construction: the case folding, the header fields
// as those keys see them, the walk that decodes a message's parts to text
// (HTML reduced, attachment names included) and the streaming matcher.
// The store's scan and text indexer read messages through it; which
// messages to read and how to store the text is the store's business.
package searchtext

import (
	"errors"
	"unicode"
	"unicode/utf8"
)

// ErrDone is returned by a Sink's Write once the sink needs no more text
// (every needle found, or the cap reached).
var ErrDone = errors.New("searchtext: no more text needed")

// Sink receives the searchable text of a message part by part.
type Sink interface {
	Write(p []byte) (int, error) // ErrDone once it needs no more
	// StartPart starts a part: no match spans parts.
	StartPart()
	// EndPart ends the part started last.
	EndPart()
	// Done reports whether the sink needs no more text.
	Done() bool
}

// AppendFold appends src lower-cased to dst. Invalid UTF-8 bytes are kept
// as they are.
func AppendFold(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(src[i:])
		if r == utf8.RuneError && size <= 1 {
			dst = append(dst, c)
			i++
			continue
		}
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
		i += size
	}
	return dst
}

// Fold lower-cases s the way the matcher folds text.
func Fold(s string) string {
	return string(AppendFold(nil, []byte(s)))
}

// IncompleteTail returns where an incomplete UTF-8 sequence at the end of
// data starts (len(data) if there is none): text written in pieces is
// folded a whole character at a time.
func IncompleteTail(data []byte) int {
	for i := len(data) - 1; i >= 0 && i >= len(data)-utf8.UTFMax; i-- {
		if utf8.RuneStart(data[i]) {
			if !utf8.FullRune(data[i:]) {
				return i
			}
			break
		}
	}
	return len(data)
}
