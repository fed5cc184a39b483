package mimeindex

import (
	"fmt"
	"io"
	"strings"
)

// The transfer decoders are push-based and lenient, unlike encoding/base64
// and mime/quotedprintable, which pull from a reader and stop at the first
// bad byte: Index must count the decoded size of a body while scanning it
// for boundaries, and BINARY must produce exactly that many bytes
// (NewDecoder uses the same code).

type transferDecoder interface {
	// decode appends the decoding of src to dst; src may be split anywhere.
	decode(dst, src []byte) []byte
	// flush appends what is left at end of input.
	flush(dst []byte) []byte
}

func newTransferDecoder(encoding string) transferDecoder {
	switch strings.ToUpper(encoding) {
	case "BASE64":
		return &base64Decoder{}
	case "QUOTED-PRINTABLE":
		return &qpDecoder{}
	}
	return nil
}

// NewDecoder returns a reader of r decoded per the Content-Transfer-Encoding
// encoding (case-insensitive). Base64 and quoted-printable are decoded
// leniently: invalid characters are skipped (base64) or kept literally
// (quoted-printable), never an error. Other encodings return r unchanged.
// Reading a Part's body [BodyStart,End) through NewDecoder(p.Encoding, ...)
// yields exactly p.DecodedSize bytes.
func NewDecoder(encoding string, r io.Reader) io.Reader {
	d := newTransferDecoder(encoding)
	if d == nil {
		return r
	}
	return &decodeReader{r: r, d: d, in: make([]byte, 32<<10)}
}

type decodeReader struct {
	r   io.Reader
	d   transferDecoder
	in  []byte
	out []byte // decoded, not yet returned
	off int
	err error
}

func (dr *decodeReader) Read(p []byte) (int, error) {
	for dr.off == len(dr.out) {
		if dr.err != nil {
			return 0, dr.err
		}
		dr.out, dr.off = dr.out[:0], 0
		n, err := dr.r.Read(dr.in)
		dr.out = dr.d.decode(dr.out, dr.in[:n])
		if err == io.EOF {
			dr.out = dr.d.flush(dr.out)
			dr.err = io.EOF
		} else if err != nil {
			dr.err = fmt.Errorf("mimeindex: reading encoded body: %w", err)
		}
	}
	n := copy(p, dr.out[dr.off:])
	dr.off += n
	return n, nil
}

var base64Values = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

// base64Decoder ignores characters outside the alphabet. Padding ends a
// quantum, so concatenated encodings decode as such.
type base64Decoder struct {
	q [4]byte
	n int
}

func (d *base64Decoder) decode(dst, src []byte) []byte {
	for _, c := range src {
		v := base64Values[c]
		if v == 0xff {
			if c == '=' {
				dst = d.flush(dst)
			}
			continue
		}
		d.q[d.n] = v
		d.n++
		if d.n == 4 {
			dst = append(dst, d.q[0]<<2|d.q[1]>>4, d.q[1]<<4|d.q[2]>>2, d.q[2]<<6|d.q[3])
			d.n = 0
		}
	}
	return dst
}

func (d *base64Decoder) flush(dst []byte) []byte {
	switch d.n {
	case 2:
		dst = append(dst, d.q[0]<<2|d.q[1]>>4)
	case 3:
		dst = append(dst, d.q[0]<<2|d.q[1]>>4, d.q[1]<<4|d.q[2]>>2)
	}
	d.n = 0
	return dst
}

// qpDecoder decodes quoted-printable (RFC 2045 §6.7): "=XX" escapes, soft
// line breaks ("=" before a line break, trailing white space allowed), and
// removal of trailing white space. Hard line breaks are kept as they are
// (CRLF or LF). Invalid escapes are kept literally.
type qpDecoder struct {
	// hold is the undecided tail: "=", "=X" (X hex), or an optional "="
	// followed by white space and an optional CR.
	hold []byte
}

// maxHold bounds hold: a longer run of white space is treated as content.
const maxHold = 4 << 10

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func (d *qpDecoder) decode(dst, src []byte) []byte {
	for i := 0; i < len(src); i++ {
		if len(d.hold) == 0 {
			// Fast path for plain text.
			j := i
			for j < len(src) && src[j] != '=' && src[j] != ' ' && src[j] != '\t' && src[j] != '\r' {
				j++
			}
			dst = append(dst, src[i:j]...)
			if j == len(src) {
				break
			}
			i = j
			d.hold = append(d.hold, src[j])
			continue
		}
		dst = d.step(dst, src[i])
	}
	return dst
}

// step handles c when hold is not empty.
func (d *qpDecoder) step(dst []byte, c byte) []byte {
	h := d.hold
	last := h[len(h)-1]
	switch {
	case h[0] == '=' && len(h) == 1 && isHex(c):
		d.hold = append(h, c)
		return dst
	case h[0] == '=' && len(h) == 2 && isHex(h[1]):
		if isHex(c) {
			d.hold = h[:0]
			return append(dst, unhex(h[1])<<4|unhex(c))
		}
	case last == '\r':
		if c == '\n' {
			d.hold = h[:0]
			if h[0] == '=' {
				return dst // soft line break
			}
			return append(dst, '\r', '\n') // hard line break; trailing white space dropped
		}
	case c == ' ' || c == '\t' || c == '\r':
		if len(h) < maxHold {
			d.hold = append(h, c)
			return dst
		}
	case c == '\n':
		d.hold = h[:0]
		if h[0] == '=' {
			return dst
		}
		return append(dst, '\n')
	}
	// Not a valid escape or break: the held bytes are content.
	dst = append(dst, h...)
	d.hold = h[:0]
	if c == '=' || c == ' ' || c == '\t' || c == '\r' {
		d.hold = append(d.hold, c)
		return dst
	}
	return append(dst, c)
}

func (d *qpDecoder) flush(dst []byte) []byte {
	h := d.hold
	d.hold = h[:0]
	switch {
	case len(h) == 0:
	case h[0] == '=' && len(h) == 2 && isHex(h[1]):
		dst = append(dst, h...) // truncated escape
	case h[len(h)-1] == '\r' && h[0] != '=':
		dst = append(dst, '\r') // trailing white space dropped, bare CR kept
	}
	// Otherwise trailing white space or a final soft break: nothing.
	return dst
}
