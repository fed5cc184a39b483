package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzDecoder reads arbitrary input as commands of generic arguments
// (every kind of token, nested lists, literals), skipping after errors as
// the server does. It must never panic, loop, or read a literal past the
// limits; each command ends in a result or an error.
func FuzzDecoder(f *testing.F) {
	for _, s := range []string{
		"a1 LOGIN user pass\r\n",
		"a2 SELECT \"INBOX\"\r\n",
		"a3 FETCH 1:*,5 (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100>)\r\n",
		"a4 APPEND INBOX (\\Seen) {5+}\r\nhello\r\n",
		"a5 APPEND INBOX ~{3}\r\n\x00\x01\x02\r\n",
		"a6 SEARCH OR (SUBJECT \"x\\\"y\") NOT UID 1:4 {3+}\r\nabc\r\n",
		"a7 NOOP {99999999999999999999}\r\n",
		"a8 X ((((((((((((\r\n",
		"a9 ID NIL\n",
		"* BAD\r\nb1 NOOP\r\n",
		"c1 STORE $ +FLAGS.SILENT (\\Deleted)\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lim := Limits{MaxLine: 256, MaxLiteral: 64, MaxCommand: 1024, MaxDepth: 8}
		d := NewDecoder(bufio.NewReaderSize(bytes.NewReader(data), 64), lim)
		d.Continue = func() error { return nil }
		for range 100 {
			d.Begin()
			err := genericCommand(d)
			var we *Error
			switch {
			case err == nil:
				continue
			case errors.As(err, &we) && we.Fatal:
				return
			case errors.As(err, &we) && !we.Ended && !d.Ended():
				if err := d.Skip(); err != nil {
					return
				}
			case errors.As(err, &we):
			default:
				return // io.EOF and friends
			}
		}
	})
}

// genericCommand reads a tag, a name and tokens of any kind to the end of
// the line.
func genericCommand(d *Decoder) error {
	if _, err := d.Tag(); err != nil {
		return err
	}
	if err := d.SP(); err != nil {
		return err
	}
	if _, err := d.Atom(); err != nil {
		return err
	}
	for !d.AtEnd() {
		if err := d.SP(); err != nil {
			return err
		}
		if err := genericArg(d); err != nil {
			return err
		}
	}
	return d.CRLF()
}

func genericArg(d *Decoder) error {
	b, err := d.Peek()
	if err != nil {
		return err
	}
	switch {
	case b == '(':
		return d.List(func() error { return genericArg(d) })
	case b == '~' || b == '{':
		lit, err := d.LiteralHeader(true)
		if err != nil {
			return err
		}
		if lit.Size > 32 {
			return d.Refuse(lit, "too big", "TOOBIG")
		}
		if err := d.Accept(lit); err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, d.LiteralReader(lit))
		return err
	case b >= '0' && b <= '9' || b == '*' || b == '$':
		_, err := d.NumSet(b%2 == 0)
		return err
	case b == '"':
		_, err := d.String()
		return err
	case b == '\\':
		d.Consume('\\')
		_, err := d.Atom()
		return err
	}
	_, err = d.ListMailbox()
	return err
}
