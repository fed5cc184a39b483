package mimeindex

import (
	"bytes"
	"encoding/base64"
	"io"

	"github.com/mailstack/mailstack/internal/headerscan"
)

// NULParts returns the leaf parts of m whose body holds a NUL byte, in
// order, reading their bodies from r. Such content cannot be sent in an
// IMAP literal (only in BINARY's literal8), so a message appended with
// binary parts (BINARY APPEND, RFC 3516) is stored with those parts in
// base64, as Dovecot does (EncodeParts).
func NULParts(r io.ReaderAt, m *Message) ([]*Part, error) {
	var out []*Part
	buf := make([]byte, 32<<10)
	var walk func(p *Part) error
	walk = func(p *Part) error {
		if len(p.Children) > 0 {
			for _, c := range p.Children {
				if err := walk(c); err != nil {
					return err
				}
			}
			return nil
		}
		if p.Type == "multipart" {
			return nil
		}
		for off := p.BodyStart; off < p.End; {
			n := min(int64(len(buf)), p.End-off)
			k, err := r.ReadAt(buf[:n], off)
			if bytes.IndexByte(buf[:k], 0) >= 0 {
				out = append(out, p)
				return nil
			}
			if err != nil && !(err == io.EOF && int64(k) == n) {
				return err
			}
			off += int64(k)
		}
		return nil
	}
	if m == nil || m.Root == nil {
		return nil, nil
	}
	return out, walk(m.Root)
}

// EncodeParts writes the size bytes of a message read from r to w with
// the given leaf parts (from NULParts, in order) re-encoded in base64: in
// each part's header, Content-Transfer-Encoding fields are replaced by
// "Content-Transfer-Encoding: base64"; its body becomes base64 in lines of
// 76 characters. Everything else is copied as it is.
func EncodeParts(r io.ReaderAt, size int64, parts []*Part, w io.Writer) error {
	var off int64
	copyTo := func(end int64) error {
		if end > off {
			if _, err := io.Copy(w, io.NewSectionReader(r, off, end-off)); err != nil {
				return err
			}
			off = end
		}
		return nil
	}
	for _, p := range parts {
		if err := copyTo(p.HeaderStart); err != nil {
			return err
		}
		hdr := make([]byte, p.BodyStart-p.HeaderStart)
		if _, err := r.ReadAt(hdr, p.HeaderStart); err != nil && err != io.EOF {
			return err
		}
		if _, err := w.Write(rewriteCTE(hdr)); err != nil {
			return err
		}
		enc := base64.NewEncoder(base64.StdEncoding, &lineWriter{w: w})
		if _, err := io.Copy(enc, io.NewSectionReader(r, p.BodyStart, p.End-p.BodyStart)); err != nil {
			return err
		}
		if err := enc.Close(); err != nil {
			return err
		}
		off = p.End
	}
	return copyTo(size)
}

// rewriteCTE drops a header's Content-Transfer-Encoding fields and adds
// one saying base64 before the blank line that ends it (adding the blank
// line if the header had none).
func rewriteCTE(hdr []byte) []byte {
	var out bytes.Buffer
	sc := headerscan.NewScanner(hdr)
	for sc.Next() {
		if f := sc.Field(); !f.Is("Content-Transfer-Encoding") {
			out.Write(f.Raw)
		}
	}
	eol := "\r\n"
	rest := sc.Rest()
	if len(rest) > 0 && rest[0] == '\n' {
		eol = "\n"
	}
	out.WriteString("Content-Transfer-Encoding: base64" + eol)
	if len(rest) == 0 {
		out.WriteString("\r\n") // the header had no blank line
	}
	out.Write(rest)
	return out.Bytes()
}

// lineWriter breaks base64 output into CRLF-terminated lines of 76.
type lineWriter struct {
	w   io.Writer
	col int
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 76-l.col)
		if _, err := l.w.Write(p[:k]); err != nil {
			return n, err
		}
		n += k
		l.col += k
		p = p[k:]
		if l.col == 76 {
			if _, err := io.WriteString(l.w, "\r\n"); err != nil {
				return n, err
			}
			l.col = 0
		}
	}
	return n, nil
}
