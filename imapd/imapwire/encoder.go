package imapwire

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Encoder writes responses into a buffer that goes out to the connection
// when it fills or on Flush: a FETCH of 100,000 messages is a few hundred
// writes (full TLS records), not one per response line. The buffer is
// allocated on first use and dropped by Release, so that thousands of idle
// sessions hold none.
//
// Methods chain; a write error is kept and returned by Flush and Err,
// after which nothing more is written.
type Encoder struct {
	w   io.Writer
	buf []byte
	err error
	// Buffers, if set, lends and takes back the encoder's buffers (of
	// *[]byte), so that sessions do not allocate one per command.
	Buffers *sync.Pool
	// UTF8 says that mailbox names and strings go out as UTF-8 (IMAP4rev2
	// or UTF8=ACCEPT enabled); otherwise names are modified UTF-7 and
	// 8-bit strings literals.
	UTF8 bool
}

const (
	// flushAt is the buffer size at which a response line's end flushes.
	flushAt = 64 << 10
	// maxQuoted is the longest string sent quoted rather than as a
	// literal.
	maxQuoted = 1024
)

// NewEncoder returns an encoder writing to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Reset makes the encoder write to w (after STARTTLS or COMPRESS); the
// buffer must have been flushed.
func (e *Encoder) Reset(w io.Writer) { e.w = w }

// Err returns the first write error.
func (e *Encoder) Err() error { return e.err }

// Buffered is the number of bytes not yet written.
func (e *Encoder) Buffered() int { return len(e.buf) }

// Flush writes out what is buffered.
func (e *Encoder) Flush() error {
	if e.err != nil || len(e.buf) == 0 {
		return e.err
	}
	_, e.err = e.w.Write(e.buf)
	e.buf = e.buf[:0]
	return e.err
}

// Release flushes and lets the buffer go (back to Buffers): the
// connection goes quiet. A writer with a Release method (a compressor
// lent from a pool) is told so too.
func (e *Encoder) Release() error {
	err := e.Flush()
	if e.buf != nil {
		if e.Buffers != nil && cap(e.buf) == flushAt {
			b := e.buf[:0]
			e.Buffers.Put(&b)
		}
		e.buf = nil
	}
	if r, ok := e.w.(interface{ Release() }); ok {
		r.Release()
	}
	return err
}

func (e *Encoder) grow() {
	if e.buf == nil {
		if e.Buffers != nil {
			if b, ok := e.Buffers.Get().(*[]byte); ok {
				e.buf = (*b)[:0]
				return
			}
			e.buf = make([]byte, 0, flushAt)
			return
		}
		e.buf = make([]byte, 0, 16<<10)
	}
}

// Raw appends s as it is.
func (e *Encoder) Raw(s string) *Encoder {
	e.grow()
	e.buf = append(e.buf, s...)
	return e
}

// Bytes appends b as it is.
func (e *Encoder) Bytes(b []byte) *Encoder {
	e.grow()
	e.buf = append(e.buf, b...)
	return e
}

// Byte appends one byte.
func (e *Encoder) Byte(c byte) *Encoder {
	e.grow()
	e.buf = append(e.buf, c)
	return e
}

// Star begins an untagged response.
func (e *Encoder) Star() *Encoder { return e.Raw("* ") }

// SP appends a space.
func (e *Encoder) SP() *Encoder { return e.Byte(' ') }

// Atom appends an atom (the caller vouches for its characters).
func (e *Encoder) Atom(s string) *Encoder { return e.Raw(s) }

// Num appends a number.
func (e *Encoder) Num(n uint32) *Encoder {
	e.grow()
	e.buf = strconv.AppendUint(e.buf, uint64(n), 10)
	return e
}

// Num64 appends a 64-bit number.
func (e *Encoder) Num64(n uint64) *Encoder {
	e.grow()
	e.buf = strconv.AppendUint(e.buf, n, 10)
	return e
}

// CRLF ends a response line, flushing if the buffer is full.
func (e *Encoder) CRLF() *Encoder {
	e.Raw("\r\n")
	if len(e.buf) >= flushAt {
		e.Flush() //nolint:errcheck // kept in e.err
	}
	return e
}

// Quoted appends s as a quoted string; s must be quotable (Quotable).
func (e *Encoder) Quoted(s string) *Encoder {
	e.grow()
	e.buf = append(e.buf, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			e.buf = append(e.buf, '\\')
		}
		e.buf = append(e.buf, s[i])
	}
	e.buf = append(e.buf, '"')
	return e
}

// Quotable reports whether s can go out as a quoted string: no line
// breaks or NUL, not too long, and 8-bit only as UTF-8 when utf8 is set.
func Quotable(s string, utf8ok bool) bool {
	if len(s) > maxQuoted {
		return false
	}
	eight := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\r' || c == '\n' || c == 0:
			return false
		case c >= 0x80:
			eight = true
		}
	}
	return !eight || utf8ok && utf8.ValidString(s)
}

// String appends s quoted if it can be, else as a literal.
func (e *Encoder) String(s string) *Encoder {
	if Quotable(s, e.UTF8) {
		return e.Quoted(s)
	}
	e.grow()
	e.buf = append(e.buf, '{')
	e.buf = strconv.AppendInt(e.buf, int64(len(s)), 10)
	e.buf = append(e.buf, "}\r\n"...)
	e.buf = append(e.buf, s...)
	return e
}

// Text appends s as a string that may carry 8-bit UTF-8 even outside
// UTF-8 mode, quoted when it can be (envelope fields Dovecot sends as
// they are); else as a literal.
func (e *Encoder) Text(s string) *Encoder {
	if Quotable(s, true) {
		return e.Quoted(s)
	}
	return e.String(s)
}

// NString appends s, or NIL when s is nil.
func (e *Encoder) NString(s *string) *Encoder {
	if s == nil {
		return e.Raw("NIL")
	}
	return e.String(*s)
}

// NStr appends s, or NIL when s is empty.
func (e *Encoder) NStr(s string) *Encoder {
	if s == "" {
		return e.Raw("NIL")
	}
	return e.Text(s)
}

// Mailbox appends a mailbox name: UTF-8 in UTF-8 mode, else modified
// UTF-7 (RFC 3501 §5.1.3). Quoted (or a literal), but INBOX as an atom.
func (e *Encoder) Mailbox(name string) *Encoder {
	if name == "INBOX" {
		return e.Raw(name)
	}
	if !e.UTF8 {
		name = EncodeMUTF7(name)
	}
	return e.String(name)
}

// LiteralHeader appends "{n}\r\n", or "~{n}\r\n" for a literal8.
func (e *Encoder) LiteralHeader(n int64, binary bool) *Encoder {
	e.grow()
	if binary {
		e.buf = append(e.buf, '~')
	}
	e.buf = append(e.buf, '{')
	e.buf = strconv.AppendInt(e.buf, n, 10)
	e.buf = append(e.buf, "}\r\n"...)
	return e
}

// ErrShortLiteral says a literal's source ended before its announced
// size: the response cannot be completed and the connection must end.
var ErrShortLiteral = fmt.Errorf("imapwire: literal source shorter than announced")

// Literal appends a literal of n bytes read from r (a literal8 if binary),
// streaming through the buffer. Any error (reading r, or r ending early)
// leaves the response incomplete: the connection must end. A literal
// cannot carry NUL (RFC 9051 CHAR8), so outside a literal8 each NUL goes
// out as 0x80, as Dovecot sends a message that holds NUL; the size stays.
func (e *Encoder) Literal(n int64, r io.Reader, binary bool) error {
	e.LiteralHeader(n, binary)
	if room := int64(cap(e.buf) - len(e.buf)); n > room && cap(e.buf) < flushAt {
		nb := make([]byte, len(e.buf), flushAt)
		copy(nb, e.buf)
		e.buf = nb
	}
	for n > 0 {
		if len(e.buf) == cap(e.buf) {
			if err := e.Flush(); err != nil {
				return err
			}
		}
		room := e.buf[len(e.buf):cap(e.buf)]
		if int64(len(room)) > n {
			room = room[:n]
		}
		k, err := r.Read(room)
		if !binary {
			replaceNUL(room[:k])
		}
		e.buf = e.buf[:len(e.buf)+k]
		n -= int64(k)
		if err != nil && n > 0 {
			if err == io.EOF {
				err = ErrShortLiteral
			}
			return err
		}
	}
	return e.err
}

// replaceNUL turns each NUL of b into 0x80, in place.
func replaceNUL(b []byte) {
	for i := bytes.IndexByte(b, 0); i >= 0; i = bytes.IndexByte(b, 0) {
		b[i] = 0x80
		b = b[i+1:]
	}
}

// Date appends an IMAP date-time ("02-Jan-2006 15:04:05 -0700"), quoted.
// Its year has four digits: an instant whose year in t's zone is past 9999
// or before 0 (a date given at -1200 late on 31-Dec-9999 is in the year
// 10000 in UTC) is written at the offset that brings it back (-1200 or
// +1400), the same instant; one beyond even those, at that end of the
// range.
func (e *Encoder) Date(t time.Time) *Encoder {
	switch {
	case t.Year() > 9999:
		t = t.In(time.FixedZone("", -12*3600))
		if t.Year() > 9999 {
			t = time.Date(9999, 12, 31, 23, 59, 59, 0, t.Location())
		}
	case t.Year() < 0:
		t = t.In(time.FixedZone("", 14*3600))
		if t.Year() < 0 {
			t = time.Date(0, 1, 1, 0, 0, 0, 0, t.Location())
		}
	}
	e.grow()
	e.buf = append(e.buf, '"')
	e.buf = t.AppendFormat(e.buf, "02-Jan-2006 15:04:05 -0700")
	e.buf = append(e.buf, '"')
	return e
}

// Status writes a status response: tag (or "*") type [code] text.
func (e *Encoder) Status(tag, typ, code, text string) *Encoder {
	e.Raw(tag).SP().Raw(typ)
	if code != "" {
		e.Raw(" [").Raw(code).Byte(']')
	}
	if text != "" {
		e.SP().Raw(sanitize(text))
	}
	return e.CRLF()
}

// sanitize keeps a response text on one line, and valid UTF-8 (RFC 9051
// text): bytes of the client's that are not become "?", as Dovecot's
// str_sanitize does.
func sanitize(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' || s[i] == 0 {
			b := []byte(s)
			for j := range b {
				if b[j] == '\r' || b[j] == '\n' || b[j] == 0 {
					b[j] = ' '
				}
			}
			return string(b)
		}
	}
	return s
}
