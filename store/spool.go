package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/mailstack/mailstack/internal/mimeindex"
)

// ErrTooBig is returned when a message exceeds the size limit given to Spool.
var ErrTooBig = errors.New("message too big")

// memSpoolLimit is the size up to which a message is spooled in memory;
// larger ones go to a temporary file, so memory stays bounded.
const memSpoolLimit = 1 << 20

// Spooled is a message read once from its source: hashed, indexed and
// kept (in memory or a temporary file) until it is stored. Close it.
type Spooled struct {
	Size      int64
	SHA256    [sha256.Size]byte
	Structure *mimeindex.Message

	pre  []byte // fields put in front by Prepend
	mem  []byte
	file *os.File
}

// Spool reads a whole message from r, computing its SHA-256 and MIME index
// in the same pass. It fails with ErrTooBig (having read at most maxSize+1
// bytes) if the message is larger than maxSize; maxSize <= 0 means no limit.
func Spool(r io.Reader, maxSize int64) (*Spooled, error) {
	sp := &spoolWriter{}
	h := sha256.New()
	src := r
	if maxSize > 0 {
		src = &limitReader{r: r, left: maxSize}
	}
	tee := io.TeeReader(src, io.MultiWriter(h, sp))
	idx, err := mimeindex.Index(tee)
	if err == nil {
		// The index may stop early on pathological input; the body must
		// still be stored whole.
		_, err = io.Copy(io.Discard, tee)
	}
	if err == nil {
		err = sp.err
	}
	if err != nil {
		sp.close()
		if errors.Is(err, ErrTooBig) {
			return nil, err
		}
		return nil, fmt.Errorf("read message: %w", err)
	}
	m := &Spooled{Size: sp.size, Structure: idx, mem: sp.buf.Bytes(), file: sp.file}
	copy(m.SHA256[:], h.Sum(nil))
	if sp.file != nil {
		m.mem = nil
	}
	return m, nil
}

// ReaderAt reads the message at any offset.
func (m *Spooled) ReaderAt() io.ReaderAt {
	if len(m.pre) > 0 {
		return prefixedReaderAt{pre: m.pre, rest: m.spooled()}
	}
	return m.spooled()
}

// Reader returns a reader of the whole message from its first byte.
func (m *Spooled) Reader() io.Reader {
	if len(m.pre) > 0 {
		return io.MultiReader(bytes.NewReader(m.pre), io.NewSectionReader(m.spooled(), 0, m.Size-int64(len(m.pre))))
	}
	if m.file != nil {
		return io.NewSectionReader(m.file, 0, m.Size)
	}
	return bytes.NewReader(m.mem)
}

// spooled reads what Spool read, without the fields Prepend added.
func (m *Spooled) spooled() io.ReaderAt {
	if m.file != nil {
		return m.file
	}
	return bytes.NewReader(m.mem)
}

// Prepend puts header fields (whole lines: trace fields, a DKIM signature)
// in front of the message without spooling or indexing it again: the
// index's offsets move (mimeindex.Message.Prepend) and only the SHA-256 is
// computed afresh, which no hash function can extend at the front. The
// result is what Spool of the whole message gives; where the index could
// differ (fields the index would read as the message's type, pathological
// headers) the message is indexed again instead. After an error (reading
// a spool file failed) m must not be stored.
func (m *Spooled) Prepend(fields []byte) error {
	if len(fields) == 0 {
		return nil
	}
	header, err := m.Header()
	if err != nil {
		return err
	}
	m.pre = append(bytes.Clone(fields), m.pre...)
	m.Size += int64(len(fields))
	if !m.Structure.Prepend(fields, header) {
		if m.Structure, err = mimeindex.Index(m.Reader()); err != nil {
			return fmt.Errorf("index message: %w", err)
		}
	}
	h := sha256.New()
	h.Write(m.pre)
	if m.file == nil {
		h.Write(m.mem)
	} else if _, err := io.Copy(h, io.NewSectionReader(m.file, 0, m.Size-int64(len(m.pre)))); err != nil {
		return fmt.Errorf("hash message: %w", err)
	}
	copy(m.SHA256[:], h.Sum(nil))
	return nil
}

// prefixedReaderAt reads pre followed by rest.
type prefixedReaderAt struct {
	pre  []byte
	rest io.ReaderAt
}

func (p prefixedReaderAt) ReadAt(b []byte, off int64) (int, error) {
	n := 0
	if off < int64(len(p.pre)) {
		n = copy(b, p.pre[off:])
		if n == len(b) {
			return n, nil
		}
	}
	k, err := p.rest.ReadAt(b[n:], max(0, off-int64(len(p.pre))))
	return n + k, err
}

// MaxStoredHeader caps the top-level header block kept beside a message for
// FETCH and SEARCH: a message whose header is larger (legal, if absurd)
// keeps only its first MaxStoredHeader bytes there; the whole header still
// streams from the body.
const MaxStoredHeader = 1 << 20

// Header returns the top-level header block (up to and including the blank
// line), at most MaxStoredHeader bytes of it.
func (m *Spooled) Header() ([]byte, error) {
	n := m.Size
	if m.Structure != nil && m.Structure.Root != nil {
		n = m.Structure.Root.BodyStart
	}
	n = min(n, MaxStoredHeader)
	buf := make([]byte, n)
	if _, err := io.ReadFull(m.Reader(), buf); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	return buf, nil
}

// Close releases the spool.
func (m *Spooled) Close() error {
	m.pre, m.mem = nil, nil
	if m.file != nil {
		name := m.file.Name()
		m.file.Close()
		m.file = nil
		return os.Remove(name)
	}
	return nil
}

type spoolWriter struct {
	buf  bytes.Buffer
	file *os.File
	size int64
	err  error
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.size += int64(len(p))
	if w.file == nil && int64(w.buf.Len()+len(p)) <= memSpoolLimit {
		return w.buf.Write(p)
	}
	if w.file == nil {
		f, err := os.CreateTemp("", "mailstack-spool-*")
		if err != nil {
			w.err = fmt.Errorf("spool message: %w", err)
			return 0, w.err
		}
		w.file = f
		if _, err := f.Write(w.buf.Bytes()); err != nil {
			w.err = fmt.Errorf("spool message: %w", err)
			return 0, w.err
		}
		w.buf = bytes.Buffer{}
	}
	if _, err := w.file.Write(p); err != nil {
		w.err = fmt.Errorf("spool message: %w", err)
		return 0, w.err
	}
	return len(p), nil
}

func (w *spoolWriter) close() {
	if w.file != nil {
		w.file.Close()
		os.Remove(w.file.Name())
	}
}

type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, ErrTooBig
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, ErrTooBig
	}
	return n, err
}
