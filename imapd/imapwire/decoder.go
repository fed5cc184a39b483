// Package imapwire reads IMAP commands and writes IMAP responses: the
// streaming parser and the response encoder of mailstack's IMAP server
// (ARCHITECTURE.md, "IMAP protocol layer"). It knows the grammar's tokens
// (atoms, strings, literals, numbers, lists, sequence sets) and the limits
// that keep a hostile client from making the server hold more than a
// bounded amount of memory; what a command means is imapd's business.
package imapwire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits bound what one command may make the server read into memory.
// Literals that a command streams (APPEND's message) are not counted.
type Limits struct {
	// MaxLine is the longest run of a command outside literals, in bytes
	// (Dovecot allows 64 KiB). Past it the connection is closed: the rest
	// of an over-long line must never be read as a command.
	MaxLine int
	// MaxLiteral is the largest literal of an ordinary argument (a search
	// string, a mailbox name) in bytes.
	MaxLiteral int64
	// MaxCommand bounds the lines and ordinary literals of one command
	// together.
	MaxCommand int64
	// MaxDepth bounds the nesting of parenthesised lists and search keys.
	MaxDepth int
}

// DefaultLimits are generous beyond what real clients send: the longest
// lines seen are UID sets of sparse selections (tens of KiB) and ID with
// 30 fields of 1,024 bytes.
var DefaultLimits = Limits{MaxLine: 64 << 10, MaxLiteral: 1 << 20, MaxCommand: 2 << 20, MaxDepth: 100}

// Error is a problem with a command's syntax or size.
type Error struct {
	// Text is said to the client (BAD, or BYE when Fatal).
	Text string
	// Code is the response code, if any (TOOBIG, CLIENTBUG...).
	Code string
	// Fatal says the connection cannot go on: the decoder no longer
	// knows where the next command starts.
	Fatal bool
	// Ended says that the client will send nothing more of the command
	// (a refused synchronising literal): nothing is to be skipped.
	Ended bool
}

func (e *Error) Error() string { return e.Text }

func syntaxErr(format string, args ...any) *Error {
	return &Error{Text: fmt.Sprintf(format, args...)}
}

// ErrLineTooLong ends a connection whose command line passed Limits.MaxLine.
var ErrLineTooLong = &Error{Text: "Command line too long", Code: "TOOBIG", Fatal: true}

// Literal describes a literal announced by the client.
type Literal struct {
	Size    int64
	NonSync bool // {n+}: the client does not wait for a continuation
	Binary  bool // ~{n}: literal8 (RFC 3516), may hold NUL
}

// Decoder reads commands from a client. Call Begin before each command.
// It reads byte by byte from a bufio.Reader, so that nothing of the next
// command is consumed before the current one is done (STARTTLS and
// COMPRESS swap the reader between commands).
type Decoder struct {
	r *bufio.Reader
	// Continue sends a command continuation request ("+ ...") and flushes
	// it; it is called before the data of every synchronising literal the
	// decoder accepts.
	Continue func() error
	lim      Limits
	line     int   // bytes of the current line so far
	total    int64 // bytes of the current command so far
	depth    int
	ended    bool // the command's final CRLF was read
	// pending is a literal announced but neither accepted nor refused
	// yet: Skip must not wait for data the client holds back, nor read
	// data it sends anyway as commands.
	pending *Literal
}

// NewDecoder returns a decoder reading r within lim.
func NewDecoder(r *bufio.Reader, lim Limits) *Decoder {
	return &Decoder{r: r, lim: lim}
}

// Reset makes the decoder read from r (after STARTTLS or COMPRESS).
func (d *Decoder) Reset(r *bufio.Reader) { d.r = r }

// Buffered is the number of bytes read from the connection but not yet
// decoded: a client pipelining commands, or data sent after STARTTLS
// before the handshake (which must be refused).
func (d *Decoder) Buffered() int { return d.r.Buffered() }

// Begin starts a new command.
func (d *Decoder) Begin() {
	d.line, d.total, d.depth, d.ended, d.pending = 0, 0, 0, false, nil
}

// Ended reports whether the last thing read was the end of a line (CRLF):
// after an error found then, there is nothing of the command to skip.
func (d *Decoder) Ended() bool { return d.ended }

// Limits returns the decoder's limits.
func (d *Decoder) Limits() Limits { return d.lim }

func (d *Decoder) count(n int) error {
	d.ended = false
	d.line += n
	d.total += int64(n)
	if d.line > d.lim.MaxLine {
		return ErrLineTooLong
	}
	if d.total > d.lim.MaxCommand {
		return &Error{Text: "Command too long", Code: "TOOBIG", Fatal: true}
	}
	return nil
}

// readByte reads one byte of the current line. An LF ends the line,
// wherever it is read (a bare LF in a quoted string too), so that Skip
// does not drop the next line.
func (d *Decoder) readByte() (byte, error) {
	b, err := d.r.ReadByte()
	if err != nil {
		return 0, err
	}
	if err := d.count(1); err != nil {
		return 0, err
	}
	if b == '\n' {
		d.line, d.ended = 0, true
	}
	return b, nil
}

// Peek returns the next byte without consuming it.
func (d *Decoder) Peek() (byte, error) {
	b, err := d.r.Peek(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// PeekIs reports whether the next byte is c.
func (d *Decoder) PeekIs(c byte) bool {
	b, err := d.Peek()
	return err == nil && b == c
}

// Consume reads c if it is next and reports whether it did.
func (d *Decoder) Consume(c byte) (bool, error) {
	b, err := d.Peek()
	if err != nil {
		return false, err
	}
	if b != c {
		return false, nil
	}
	_, err = d.readByte()
	return err == nil, err
}

// Expect reads c or fails with a syntax error naming what was wanted.
func (d *Decoder) Expect(c byte, what string) error {
	b, err := d.Peek()
	if err != nil {
		return err
	}
	if b != c {
		return syntaxErr("Expected %s, got %s", what, describe(b))
	}
	_, err = d.readByte()
	return err
}

// SP reads one space.
func (d *Decoder) SP() error { return d.Expect(' ', "SP") }

// CRLF reads the end of the command line: CRLF, or a bare LF as Dovecot
// accepts.
func (d *Decoder) CRLF() error {
	b, err := d.Peek()
	if err != nil {
		return err
	}
	switch b {
	case '\r':
		d.readByte() //nolint:errcheck // peeked
		if err := d.Expect('\n', "LF after CR"); err != nil {
			return err
		}
	case '\n':
		d.readByte() //nolint:errcheck // peeked
	default:
		return syntaxErr("Expected end of command, got %s", describe(b))
	}
	d.line, d.ended = 0, true
	return nil
}

// AtEnd reports whether the command line ends here (the next byte is CR
// or LF).
func (d *Decoder) AtEnd() bool {
	b, err := d.Peek()
	return err == nil && (b == '\r' || b == '\n')
}

func describe(b byte) string {
	switch {
	case b == '\r' || b == '\n':
		return "end of line"
	case b < 0x20 || b >= 0x7f:
		return fmt.Sprintf("byte 0x%02x", b)
	}
	return strconv.Quote(string(b))
}

// IsAtomChar reports whether b may appear in an atom (RFC 9051 ATOM-CHAR).
func IsAtomChar(b byte) bool {
	switch b {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return b > 0x20 && b < 0x7f
}

// isAStringChar is ASTRING-CHAR: an atom character or "]".
func isAStringChar(b byte) bool { return IsAtomChar(b) || b == ']' }

// isListChar is list-char: an atom character, a list wildcard or "]".
func isListChar(b byte) bool { return isAStringChar(b) || b == '%' || b == '*' }

// isTagChar is a tag character: ASTRING-CHAR except "+".
func isTagChar(b byte) bool { return isAStringChar(b) && b != '+' }

// readWhile reads bytes while ok holds; at least one byte is required.
func (d *Decoder) readWhile(ok func(byte) bool, what string) (string, error) {
	var buf []byte
	for {
		b, err := d.Peek()
		if err != nil {
			if len(buf) > 0 && errors.Is(err, io.EOF) {
				break
			}
			return "", err
		}
		if !ok(b) {
			break
		}
		if _, err := d.readByte(); err != nil {
			return "", err
		}
		buf = append(buf, b)
	}
	if len(buf) == 0 {
		b, _ := d.Peek()
		return "", syntaxErr("Expected %s, got %s", what, describe(b))
	}
	return string(buf), nil
}

// Tag reads a command tag.
func (d *Decoder) Tag() (string, error) { return d.readWhile(isTagChar, "tag") }

// Atom reads an atom.
func (d *Decoder) Atom() (string, error) { return d.readWhile(IsAtomChar, "atom") }

// AtomUpTo reads atom characters other than stop (for "BODY[", "1.2.MIME").
func (d *Decoder) AtomUpTo(stop byte) (string, error) {
	return d.readWhile(func(b byte) bool { return b != stop && IsAtomChar(b) }, "atom")
}

// Number reads an nz-number or 0 as uint32; larger values are an error.
func (d *Decoder) Number() (uint32, error) {
	n, err := d.number(0xffffffff)
	return uint32(n), err
}

// Number64 reads a number up to 2^63-1 (mod-sequence values, sizes).
func (d *Decoder) Number64() (uint64, error) { return d.number(1<<63 - 1) }

func (d *Decoder) number(max uint64) (uint64, error) {
	s, err := d.readWhile(func(b byte) bool { return b >= '0' && b <= '9' }, "number")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > max {
		return 0, syntaxErr("Number out of range: %s", truncate(s))
	}
	return n, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Quoted reads a quoted string (the opening quote is next).
func (d *Decoder) Quoted() (string, error) {
	if err := d.Expect('"', "quoted string"); err != nil {
		return "", err
	}
	var buf []byte
	for {
		b, err := d.readByte()
		if err != nil {
			return "", err
		}
		switch b {
		case '"':
			return string(buf), nil
		case '\\':
			c, err := d.readByte()
			if err != nil {
				return "", err
			}
			if c != '"' && c != '\\' {
				return "", syntaxErr("Invalid escape in quoted string: %s", describe(c))
			}
			b = c
		case '\r', '\n':
			return "", syntaxErr("Line break in quoted string")
		case 0:
			return "", syntaxErr("NUL in quoted string")
		}
		buf = append(buf, b)
	}
}

// LiteralHeader reads "{n}", "{n+}" or, with binary, "~{n}" (and their
// non-synchronising forms), up to and including the CRLF that ends the
// line. The caller then decides whether to take the literal: Accept (it
// sends the continuation request of a synchronising literal) and read
// exactly Size bytes with LiteralReader, or Refuse.
func (d *Decoder) LiteralHeader(binary bool) (Literal, error) {
	var lit Literal
	if binary {
		ok, err := d.Consume('~')
		if err != nil {
			return lit, err
		}
		lit.Binary = ok
	}
	if err := d.Expect('{', "literal"); err != nil {
		return lit, err
	}
	n, err := d.number(1<<63 - 1)
	if err != nil {
		// The client's idea of where the line ends is unknown now.
		return lit, &Error{Text: err.Error(), Fatal: true}
	}
	lit.Size = int64(n)
	ok, err := d.Consume('+')
	if err != nil {
		return lit, err
	}
	lit.NonSync = ok
	if err := d.Expect('}', "} of literal"); err != nil {
		return lit, &Error{Text: err.Error(), Fatal: true}
	}
	if err := d.CRLF(); err != nil {
		// "{5} foo": the client does not think the line ended.
		return lit, &Error{Text: "Expected end of line after literal size", Fatal: true}
	}
	d.ended, d.pending = false, &lit
	return lit, nil
}

// Accept takes a literal: for a synchronising one it sends the
// continuation request.
func (d *Decoder) Accept(lit Literal) error {
	d.pending = nil
	if lit.NonSync {
		return nil
	}
	if d.Continue == nil {
		return errors.New("imapwire: no continuation writer")
	}
	return d.Continue()
}

// Refuse answers a literal the server will not take. A synchronising one
// was never sent: the command is over (Ended; the caller answers with a
// tagged NO or BAD). A non-synchronising one is on its way: it is read
// and dropped if small, else the connection must end (Fatal), because
// the bytes still coming would otherwise be read as commands.
func (d *Decoder) Refuse(lit Literal, text, code string) error {
	d.pending = nil
	if !lit.NonSync {
		// The client sends nothing more of this command.
		d.ended = true
		return &Error{Text: text, Code: code, Ended: true}
	}
	if lit.Size <= d.lim.MaxLiteral {
		if _, err := io.CopyN(io.Discard, d.r, lit.Size); err != nil {
			return err
		}
		d.line, d.ended = 0, false
		return &Error{Text: text, Code: code} // skip the rest of the command
	}
	return &Error{Text: text, Code: code, Fatal: true}
}

// LiteralReader returns the data of an accepted literal: exactly Size
// bytes, streamed from the connection. An early end of the connection is
// io.ErrUnexpectedEOF. The rest of the command line follows once the
// reader has been read to its end.
func (d *Decoder) LiteralReader(lit Literal) io.Reader {
	d.line, d.ended = 0, false
	return &literalReader{d: d, left: lit.Size}
}

type literalReader struct {
	d    *Decoder
	left int64
}

func (l *literalReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.d.r.Read(p)
	l.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// literal reads an ordinary literal into memory, within the limits.
func (d *Decoder) literal(binary bool) ([]byte, error) {
	lit, err := d.LiteralHeader(binary)
	if err != nil {
		return nil, err
	}
	if lit.Size > d.lim.MaxLiteral || d.total+lit.Size > d.lim.MaxCommand {
		return nil, d.Refuse(lit, fmt.Sprintf("Literal too big (at most %d bytes here)", d.lim.MaxLiteral), "TOOBIG")
	}
	if err := d.Accept(lit); err != nil {
		return nil, err
	}
	buf := make([]byte, lit.Size)
	if _, err := io.ReadFull(d.r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	d.total += lit.Size
	d.line, d.ended = 0, false
	if !lit.Binary {
		for _, b := range buf {
			if b == 0 {
				return nil, syntaxErr("NUL in literal")
			}
		}
	}
	return buf, nil
}

// String reads a quoted string or a literal.
func (d *Decoder) String() (string, error) { return d.stringOr(nil, "string") }

// AString reads an atom-like string (ASTRING-CHARs), a quoted string or a
// literal.
func (d *Decoder) AString() (string, error) { return d.stringOr(isAStringChar, "string") }

// ListMailbox reads a LIST pattern: list-char atoms (with % and *), a
// quoted string or a literal.
func (d *Decoder) ListMailbox() (string, error) { return d.stringOr(isListChar, "mailbox pattern") }

// stringOr reads a quoted string, a literal or, if atom is set, a run of
// the bytes it accepts.
func (d *Decoder) stringOr(atom func(byte) bool, what string) (string, error) {
	b, err := d.Peek()
	if err != nil {
		return "", err
	}
	switch {
	case b == '"':
		return d.Quoted()
	case b == '{':
		buf, err := d.literal(false)
		return string(buf), err
	case atom == nil:
		return "", syntaxErr("Expected %s, got %s", what, describe(b))
	}
	return d.readWhile(atom, what)
}

// NString reads a string or NIL; nil says NIL.
func (d *Decoder) NString() (*string, error) {
	b, err := d.Peek()
	if err != nil {
		return nil, err
	}
	if b == 'N' || b == 'n' {
		a, err := d.Atom()
		if err != nil {
			return nil, err
		}
		if !strings.EqualFold(a, "NIL") {
			return nil, syntaxErr("Expected NIL or string, got %s", truncate(a))
		}
		return nil, nil
	}
	s, err := d.String()
	return &s, err
}

// List reads a parenthesised list, calling item for each element (none for
// "()"). Elements are separated by one space.
func (d *Decoder) List(item func() error) error {
	if err := d.Expect('(', "("); err != nil {
		return err
	}
	return d.ListRest(item)
}

// AtomList reads a parenthesised list of atoms, such as a command's
// options, calling item with each one.
func (d *Decoder) AtomList(item func(atom string) error) error {
	return d.List(func() error {
		a, err := d.Atom()
		if err != nil {
			return err
		}
		return item(a)
	})
}

// ListRest is List after its "(".
func (d *Decoder) ListRest(item func() error) error {
	if d.depth++; d.lim.MaxDepth > 0 && d.depth > d.lim.MaxDepth {
		return syntaxErr("Too deeply nested")
	}
	defer func() { d.depth-- }()
	if ok, err := d.Consume(')'); err != nil || ok {
		return err
	}
	for {
		if err := item(); err != nil {
			return err
		}
		b, err := d.Peek()
		if err != nil {
			return err
		}
		switch b {
		case ')':
			_, err := d.readByte()
			return err
		case ' ':
			d.readByte() //nolint:errcheck // peeked
		default:
			return syntaxErr("Expected SP or ), got %s", describe(b))
		}
	}
}

// Nest counts one more level of nesting (search keys); call the returned
// function when leaving it.
func (d *Decoder) Nest() (func(), error) {
	if d.depth++; d.lim.MaxDepth > 0 && d.depth > d.lim.MaxDepth {
		d.depth--
		return nil, syntaxErr("Too deeply nested")
	}
	return func() { d.depth-- }, nil
}

// Line reads the rest of the current line (IDLE's DONE, an AUTHENTICATE
// response), within MaxLine, without its line break.
func (d *Decoder) Line() (string, error) {
	var buf []byte
	for {
		b, err := d.readByte()
		if err != nil {
			return "", err
		}
		if b == '\n' {
			d.line, d.ended = 0, true
			if n := len(buf); n > 0 && buf[n-1] == '\r' {
				buf = buf[:n-1]
			}
			return string(buf), nil
		}
		buf = append(buf, b)
	}
}

// Skip drops the rest of a command after a syntax error: the rest of the
// line, and, where the line ends with a non-synchronising literal, that
// literal's data and the line after it, and so on. A line ending with a
// synchronising literal ends the skip: the client waits for a
// continuation that will not come, and takes the tagged BAD as the end of
// its command. A literal too large to drop ends the connection (Fatal).
func (d *Decoder) Skip() error {
	if lit := d.pending; lit != nil {
		d.pending = nil
		if !lit.NonSync {
			d.ended = true
			return nil
		}
		if lit.Size > d.lim.MaxLiteral {
			return &Error{Text: "Literal too big", Code: "TOOBIG", Fatal: true}
		}
		if _, err := io.CopyN(io.Discard, d.r, lit.Size); err != nil {
			return err
		}
	}
	var tail []byte // the last bytes of the line, to spot "{n+}"
	for {
		b, err := d.readByte()
		if err != nil {
			return err
		}
		if b != '\n' {
			if len(tail) == 32 {
				copy(tail, tail[1:])
				tail = tail[:31]
			}
			tail = append(tail, b)
			continue
		}
		d.line = 0
		size, nonSync, ok := trailingLiteral(tail)
		tail = tail[:0]
		if !ok || !nonSync {
			return nil
		}
		if size > d.lim.MaxLiteral {
			return &Error{Text: "Literal too big", Code: "TOOBIG", Fatal: true}
		}
		if _, err := io.CopyN(io.Discard, d.r, size); err != nil {
			return err
		}
	}
}

// trailingLiteral parses a literal announcement at the end of a line
// ("... {12+}\r" or "~{12}").
func trailingLiteral(line []byte) (size int64, nonSync, ok bool) {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	n := len(line)
	if n < 3 || line[n-1] != '}' {
		return 0, false, false
	}
	i := n - 2
	if line[i] == '+' {
		nonSync = true
		i--
	}
	end := i + 1
	for i >= 0 && line[i] >= '0' && line[i] <= '9' {
		i--
	}
	if i < 0 || line[i] != '{' || i+1 == end {
		return 0, false, false
	}
	v, err := strconv.ParseInt(string(line[i+1:end]), 10, 64)
	if err != nil {
		return 1 << 62, nonSync, true // absurd: too big to drop
	}
	return v, nonSync, true
}

// ValidUTF8 reports whether s is valid UTF-8 (mailbox names, search
// strings in UTF-8 mode).
func ValidUTF8(s string) bool { return utf8.ValidString(s) }

// PeekWord reports whether the next bytes are word (case-insensitive)
// followed by a space or the end of the line, without consuming them.
// word must be letters. It peeks one byte further only after a byte that
// matched, so it never waits for bytes past the end of the line, which a
// client waiting for the answer will not send.
func (d *Decoder) PeekWord(word string) bool {
	for i := 0; i <= len(word); i++ {
		b, err := d.r.Peek(i + 1)
		if err != nil {
			return false
		}
		if i == len(word) {
			return b[i] == ' ' || b[i] == '\r' || b[i] == '\n'
		}
		if b[i]|0x20 != word[i]|0x20 {
			return false
		}
	}
	return false
}
