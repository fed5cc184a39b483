package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"

	"github.com/mailstack/mailstack/imapd/imapwire"
)

// COMPRESS=DEFLATE (RFC 4978): after the tagged OK both directions are raw
// DEFLATE (RFC 1951) streams inside TLS.
//
// Reading: a client ends each command with a flush, which ends a DEFLATE
// block, and then waits for the answer. zlib's Z_SYNC_FLUSH follows the
// block with an empty stored block; Z_PARTIAL_FLUSH with an empty fixed
// block of 10 bits, of which up to 7 stay in the client until it sends
// more. Go's compress/flate hands over what a Huffman block decoded only
// when its window fills or at an empty stored block, so a command sent
// with a partial flush stays inside it while it waits for the next block
// (golang/go#31514 and PR 68130 name IMAP); klauspost's flate, even with
// WithPartialBlock, wants 10 bits past the end of a dynamic block before
// it decodes its last symbol. Either stalls IDLE/DONE or a NOOP, as
// TestInflateHandsOverEveryBlock and TestCompressPython show; mbsync
// flushes partially, so with compress/flate it never gets past its first
// compressed command (TestCompressMbsync). inflate.go
// therefore has a decompressor of its own that hands over everything it
// decoded before it would wait for input.
//
// Writing: responses go out whenever the encoder flushes (64 KiB filled,
// or the session waits for the client), each as one sync-flushed piece,
// so the client can always decode all it got. A compressor at level 6
// holds about 760 KB, so it is lent from a per-server pool only while the
// session has something to send and given back when the session waits
// for the client: thousands of idle sessions hold none. The price is that
// each command's responses start without the previous ones as dictionary.
// The decompressor cannot be given back (the client's compressor may refer
// to anything in the last 32 KiB it sent): with the 4 KiB buffer of
// decompressed input, an idle compressed session holds about 55 KB more
// than a plain one (BenchmarkCompressIdleSessions).

// compressLevel is Dovecot's default (imap_compress_deflate_level).
// klauspost's level 6 compresses the responses of a 100,000-message FLAGS
// fetch about 8× at some 250 MB/s here; level 1 about 6.4× at 400 MB/s.
// Go's compress/flate at level 6 is about 6× slower for 7.6×.
const compressLevel = 6

// deflaters is a server's pool of compressors and its COMPRESS count.
type deflaters struct {
	pool sync.Pool // of *deflateState
	// sessions counts the sessions that turned COMPRESS on (tests).
	sessions atomic.Int64
}

// deflateState is a compressor and the buffer it writes into, so that one
// flush of the encoder becomes one write to the connection (a few TLS
// records), not one per 240 bytes of the compressor's own buffer.
type deflateState struct {
	fw  *flate.Writer
	out []byte
}

func (d *deflateState) Write(p []byte) (int, error) {
	d.out = append(d.out, p...)
	return len(p), nil
}

// maxKeptOut is the largest output buffer a pooled compressor keeps.
const maxKeptOut = 256 << 10

// deflateWriter is what the encoder writes to once COMPRESS is on.
type deflateWriter struct {
	pool  *sync.Pool
	dst   io.Writer // the connection, with its write deadline
	debug io.Writer // Options.DebugWriter: the traffic before compression
	st    *deflateState
}

// Write compresses p and sends it with a sync flush.
func (w *deflateWriter) Write(p []byte) (int, error) {
	if w.debug != nil {
		w.debug.Write(p) //nolint:errcheck // debugging only
	}
	if w.st == nil {
		st, _ := w.pool.Get().(*deflateState)
		if st == nil {
			st = &deflateState{}
			fw, err := flate.NewWriter(st, compressLevel)
			if err != nil {
				return 0, err
			}
			st.fw = fw
		} else {
			// Reset forgets the history: nothing of another session's
			// output may be referred to in this one's.
			st.fw.Reset(st)
		}
		w.st = st
	}
	st := w.st
	if _, err := st.fw.Write(p); err != nil {
		return 0, err
	}
	if err := st.fw.Flush(); err != nil {
		return 0, err
	}
	_, err := w.dst.Write(st.out)
	st.out = st.out[:0]
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Release gives the compressor back: the session waits for the client
// (imapwire.Encoder.Release calls it).
func (w *deflateWriter) Release() {
	if w.st == nil {
		return
	}
	if cap(w.st.out) > maxKeptOut {
		w.st.out = nil
	}
	w.pool.Put(w.st)
	w.st = nil
}

// inflateReader is the decompressed input. Corrupt input ends the
// session with BYE: where the next command starts is unknown.
type inflateReader struct{ r io.Reader }

func (r inflateReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if errors.Is(err, errCorrupt) {
		err = &imapwire.Error{Text: "Invalid DEFLATE data", Code: "CLIENTBUG", Fatal: true}
	}
	return n, err
}

// inflateBuffer is the size of the buffer of decompressed input the
// decoder reads from.
const inflateBuffer = 4 << 10

// cmdCompress is COMPRESS (RFC 4978 §3). A second COMPRESS is refused as
// Dovecot refuses it, NO [COMPRESSIONACTIVE]; an unknown mechanism is BAD.
func (s *session) cmdCompress(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	mech, err := c.d.Atom()
	if err != nil {
		return err
	}
	if err := c.end(); err != nil {
		return err
	}
	if s.compressed {
		return no("COMPRESSIONACTIVE", "DEFLATE is active already")
	}
	if !strings.EqualFold(mech, "DEFLATE") {
		return bad("Unknown compression mechanism " + truncate(mech))
	}
	// Counted before the OK leaves: a client that has it sees the count.
	s.srv.deflate.sessions.Add(1)
	s.enc.Status(c.tag, "OK", "", "Begin compression")
	if err := s.enc.Flush(); err != nil {
		return err
	}
	s.startDeflate()
	return errAnswered
}

// startDeflate turns compression on in both directions, right after the
// CRLF of the tagged OK. Input the client sent already (it must not, but
// may) is the start of the compressed stream.
func (s *session) startDeflate() {
	// Read the connection directly from now on: the debug tee of
	// setTransport would log compressed bytes.
	buffered, _ := s.br.Peek(s.br.Buffered())
	pending := bytes.Clone(buffered)
	s.br.Reset(io.MultiReader(bytes.NewReader(pending), s.conn))
	var in io.Reader = inflateReader{newInflater(s.br)}
	w := &deflateWriter{pool: &s.srv.deflate.pool, dst: deadlineWriter{s.conn}}
	if d := s.srv.opts.DebugWriter; d != nil {
		in = io.TeeReader(in, d)
		w.debug = d
	}
	s.dec.Reset(bufio.NewReaderSize(in, inflateBuffer))
	s.enc.Reset(w)
	s.compressed = true
	s.log.Debug("COMPRESS=DEFLATE on")
}
