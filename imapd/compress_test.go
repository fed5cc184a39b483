package imapd

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kflate "github.com/klauspost/compress/flate"
)

// deflateConn compresses what a raw test client writes, one sync flush
// per Write (so one per command line). The client side uses the standard
// library's compress/flate in both directions: an implementation other
// than the server's.
type deflateConn struct {
	net.Conn
	zw *flate.Writer
}

func (c *deflateConn) Write(p []byte) (int, error) {
	if _, err := c.zw.Write(p); err != nil {
		return 0, err
	}
	return len(p), c.zw.Flush()
}

// compress sends COMPRESS DEFLATE and compresses the rest of r's session.
func (r *raw) compress() {
	r.t.Helper()
	r.cmd("COMPRESS DEFLATE")
	if r.r.Buffered() != 0 {
		r.t.Fatalf("%d bytes after the COMPRESS OK", r.r.Buffered())
	}
	zw, err := flate.NewWriter(r.c, flate.DefaultCompression)
	if err != nil {
		r.t.Fatal(err)
	}
	r.c = &deflateConn{Conn: r.c, zw: zw}
	r.r = bufio.NewReader(flate.NewReader(r.r))
}

// TestCompress: COMPRESS DEFLATE in both states, the refusals, and a
// session that goes on compressed: SELECT, FETCH with literals, IDLE with
// a delivery in between, DONE answered at once.
func TestCompress(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver("INBOX", crlf(simpleMsg))

	// Before login: refused, and the session stays uncompressed.
	r := e.dialRaw()
	if _, status := r.try("COMPRESS DEFLATE"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("COMPRESS before login: %q, want BAD", status)
	}
	r.cmd("LOGIN " + e.user + " " + e.pass)
	if _, status := r.try("COMPRESS GZIP"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("COMPRESS GZIP: %q, want BAD", status)
	}
	if _, status := r.try("COMPRESS"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("COMPRESS without a mechanism: %q, want BAD", status)
	}
	r.cmd("SELECT INBOX")
	before := e.srv.deflate.sessions.Load()
	r.compress() // in the selected state
	if got := e.srv.deflate.sessions.Load(); got != before+1 {
		t.Fatalf("compressed sessions: %d, want %d", got, before+1)
	}
	if _, status := r.try("COMPRESS DEFLATE"); !strings.HasPrefix(status, "NO [COMPRESSIONACTIVE]") {
		t.Fatalf("second COMPRESS: %q", status)
	}
	if _, status := r.try("STARTTLS"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("STARTTLS after COMPRESS: %q", status)
	}
	name, body := r.fetchLiteral("FETCH 1 BODY.PEEK[]")
	if name != "BODY[]" || string(body) != crlf(simpleMsg) {
		t.Fatalf("FETCH under COMPRESS: %s %q", name, body)
	}

	// IDLE: the update arrives while idle, DONE is answered at once.
	fmt.Fprintf(r.c, "i1 IDLE\r\n")
	if l := r.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	e.deliver("INBOX", crlf(simpleMsg))
	if l := r.line(); l != "* 2 EXISTS" {
		t.Fatalf("in IDLE: %q, want * 2 EXISTS", l)
	}
	if l := r.line(); !strings.HasPrefix(l, "* 2 RECENT") {
		t.Fatalf("in IDLE: %q, want * 2 RECENT", l)
	}
	fmt.Fprintf(r.c, "DONE\r\n")
	if l := r.line(); !strings.HasPrefix(l, "i1 OK") {
		t.Fatalf("DONE: %q", l)
	}
	if !r.alive() {
		t.Fatal("session gone after IDLE")
	}

	// In the authenticated state too, and on a second session at once:
	// each stream stands alone (a pooled compressor never refers to
	// another session's output).
	r2 := e.raw()
	r2.compress()
	r2.cmd("SELECT INBOX")
	for _, rr := range []*raw{r, r2} {
		if _, body := rr.fetchLiteral("FETCH 2 BODY.PEEK[]"); string(body) != crlf(simpleMsg) {
			t.Fatalf("FETCH: %q", body)
		}
	}
	untagged := r.cmd("LOGOUT")
	if len(untagged) != 1 || !strings.HasPrefix(untagged[0], "* BYE") {
		t.Fatalf("LOGOUT: %q", untagged)
	}
}

// TestCompressCapability: COMPRESS=DEFLATE is offered where a login is
// possible (TLS) and after it, not before STARTTLS.
func TestCompressCapability(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name string
		caps string
		want bool
	}{
		{"cleartext before STARTTLS", e.srv.caps.plain, false},
		{"TLS before login", e.srv.caps.tls, true},
		{"after login", e.srv.caps.authenticated, true},
	} {
		if got := slices.Contains(strings.Fields(tc.caps), "COMPRESS=DEFLATE"); got != tc.want {
			t.Errorf("%s: COMPRESS=DEFLATE offered %v, want %v (%s)", tc.name, got, tc.want, tc.caps)
		}
	}
}

// TestCompressAfterStartTLS: port 143, STARTTLS, LOGIN, COMPRESS: the
// compressed stream runs inside TLS.
func TestCompressAfterStartTLS(t *testing.T) {
	e := newEnv(t, envOptions{})
	conn, err := net.Dial("tcp", e.startTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := &raw{t: t, c: conn, r: bufio.NewReader(conn)}
	if l := r.line(); strings.Contains(l, "COMPRESS=DEFLATE") {
		t.Fatalf("greeting before STARTTLS offers COMPRESS: %q", l)
	}
	if _, status := r.try("COMPRESS DEFLATE"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("COMPRESS before STARTTLS: %q", status)
	}
	r.cmd("STARTTLS")
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
	r.c, r.r = tc, bufio.NewReader(tc)
	r.cmd("LOGIN " + e.user + " " + e.pass)
	r.compress()
	r.cmd("SELECT INBOX")
	r.cmd("NOOP")
	if _, status := r.try("STARTTLS"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("STARTTLS after COMPRESS: %q", status)
	}
}

// TestCompressLimits: the decoder's limits count decompressed bytes. An
// over-long line that compresses to almost nothing ends the session as
// uncompressed (BAD, then BYE); so does input that is not DEFLATE.
func TestCompressLimits(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw()
	r.compress()
	// 1 MiB of one letter: about a kilobyte compressed.
	fmt.Fprintf(r.c, "l1 SEARCH SUBJECT %s\r\n", strings.Repeat("a", 1<<20))
	if lines, status, _ := r.readUntilTagged("l1"); !strings.HasPrefix(status, "BAD [TOOBIG]") {
		t.Fatalf("over-long line: %q %q", lines, status)
	}
	if l, _, closed := r.readUntilTagged("none"); len(l) != 1 || !strings.HasPrefix(l[0], "* BYE") || !closed {
		t.Fatalf("after the over-long line: %q (closed %v)", l, closed)
	}

	// Not DEFLATE: BYE (compressed), then the connection closes.
	r2 := e.raw()
	r2.cmd("COMPRESS DEFLATE")
	if _, err := r2.c.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	r2.r = bufio.NewReader(flate.NewReader(r2.r))
	if l, _, closed := r2.readUntilTagged("none"); len(l) != 1 || l[0] != "* BYE Invalid DEFLATE data" || !closed {
		t.Fatalf("after corrupt input: %q closed %v", l, closed)
	}
}

// TestCompressPython: Python's zlib, an implementation other than Go's,
// compresses with each of zlib's flush modes that end a block on a byte
// boundary: Z_SYNC_FLUSH (what RFC 4978 clients use), Z_PARTIAL_FLUSH
// (which Go's own compress/flate reader cannot follow: see compress.go)
// and Z_FULL_FLUSH. The script sends nothing after a command until its
// answer, so a decompressor that waits for more input times it out.
func TestCompressPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is required for this test: %v", err)
	}
	for _, mode := range []string{"sync", "partial", "full"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			e.deliver("INBOX", crlf("From: a@example.test\nSubject: one\n\nbody one\n"))
			e.deliver("INBOX", crlf("From: a@example.test\nSubject: two\n\nbody two\n"))
			host, port, _ := net.SplitHostPort(e.addr)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, py, "testdata/compress_client.py", host, port, e.user, e.pass, mode)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			var lines []string
			for sc.Scan() {
				lines = append(lines, sc.Text())
				if sc.Text() == "IDLING" {
					e.deliver("INBOX", crlf("From: a@example.test\nSubject: three\n\nbody three\n"))
				}
			}
			err = cmd.Wait()
			t.Logf("%s%s", strings.Join(lines, "\n"), stderr.String())
			if err != nil || len(lines) == 0 || lines[len(lines)-1] != "OK" {
				t.Fatalf("compress_client.py %s: %v", mode, err)
			}
		})
	}
}

// TestInflateHandsOverEveryBlock: the server's decompressor returns
// every byte a flush ended without reading further, for each of zlib's
// flushes, with the input arriving through a pipe that blocks after each
// piece (as a socket does). The pieces are short commands (fixed-Huffman
// blocks), longer varied text (dynamic blocks), random bytes (stored
// blocks) and more than a window's worth. It also logs where Go's
// compress/flate and klauspost's flate stall, which is why neither is
// used.
func TestInflateHandsOverEveryBlock(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is required for this test: %v", err)
	}
	pieces := []string{"a NOOP\r\n", "b IDLE\r\n", "DONE\r\n",
		"c SEARCH TEXT \"" + benchText(rand.New(rand.NewPCG(1, 1)), 300) + "\"\r\n",
		"d SEARCH TEXT \"" + benchText(rand.New(rand.NewPCG(2, 1)), 3000) + "\"\r\n",
		strings.Repeat("e NOOP\r\n", 1000),
		string(randomBytes(70_000)),
		benchText(rand.New(rand.NewPCG(3, 1)), 100_000),
		"f LOGOUT\r\n"}
	for _, mode := range []string{"Z_SYNC_FLUSH", "Z_PARTIAL_FLUSH", "Z_FULL_FLUSH"} {
		t.Run(mode, func(t *testing.T) {
			chunks := zlibPieces(t, py, mode, pieces)
			readers := []struct {
				name string
				new  func(*bufio.Reader) io.Reader
			}{
				{"inflater", func(r *bufio.Reader) io.Reader { return newInflater(r) }},
				{"compress/flate", func(r *bufio.Reader) io.Reader { return flate.NewReader(r) }},
				{"klauspost flate, partial blocks", func(r *bufio.Reader) io.Reader {
					return kflate.NewReaderOpts(r, kflate.WithPartialBlock())
				}},
			}
			for _, rd := range readers {
				stalled := handsOver(rd.new, chunks, pieces)
				switch {
				case rd.name != "inflater":
					t.Logf("%s with %s: stalls at piece %d (-1: never)", rd.name, mode, stalled)
				case stalled >= 0:
					t.Errorf("%s with %s: piece %d (%.20q) not handed over without more input", rd.name, mode, stalled, pieces[stalled])
				}
			}
		})
	}
}

// zlibPieces has Python's zlib compress each piece in turn into one raw
// DEFLATE stream, each ended by the given flush, and returns the
// compressed pieces.
func zlibPieces(t *testing.T, py, flush string, pieces []string) [][]byte {
	t.Helper()
	script := `import sys, zlib
c = zlib.compressobj(6, zlib.DEFLATED, -15)
while True:
    n = sys.stdin.buffer.readline()
    if not n:
        break
    d = c.compress(sys.stdin.buffer.read(int(n))) + c.flush(getattr(zlib, sys.argv[1]))
    sys.stdout.buffer.write(b"%d\n" % len(d) + d)
`
	var in bytes.Buffer
	for _, p := range pieces {
		fmt.Fprintf(&in, "%d\n%s", len(p), p)
	}
	cmd := exec.Command(py, "-c", script, flush)
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var chunks [][]byte
	for br := bufio.NewReader(bytes.NewReader(out)); ; {
		var n int
		if _, err := fmt.Fscanf(br, "%d\n", &n); err != nil {
			break
		}
		chunk := make([]byte, n)
		if _, err := io.ReadFull(br, chunk); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, chunk)
	}
	if len(chunks) != len(pieces) {
		t.Fatalf("%d chunks from python, want %d", len(chunks), len(pieces))
	}
	return chunks
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// handsOver feeds chunks one at a time through a pipe into a reader made
// by newReader (over a bufio.Reader, as the session's) and returns the
// index of the first piece not handed over within a second, or -1.
func handsOver(newReader func(*bufio.Reader) io.Reader, chunks [][]byte, pieces []string) int {
	pr, pw := io.Pipe()
	defer pw.Close()
	zr := bufio.NewReader(newReader(bufio.NewReader(pr)))
	for i, chunk := range chunks {
		go pw.Write(chunk) //nolint:errcheck // the reader checks
		got := make(chan string, 1)
		go func() {
			buf := make([]byte, len(pieces[i]))
			_, err := io.ReadFull(zr, buf)
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(buf)
		}()
		select {
		case s := <-got:
			if s != pieces[i] {
				return i
			}
		case <-time.After(time.Second):
			return i
		}
	}
	return -1
}

// TestCompressMbsync: mbsync (isync 1.4) turns COMPRESS on by itself when
// offered: a full sync of three messages runs compressed (the server
// counts the session) and arrives whole. mbsync ends its commands with
// Z_PARTIAL_FLUSH: a server reading through Go's compress/flate never
// sees its first compressed command, and mbsync times out.
func TestCompressMbsync(t *testing.T) {
	// A body long enough that compression shows.
	body := strings.Repeat("The quick brown fox jumps over the lazy dog.\n", 200)
	e, mbsync, rc, local := newMbsyncEnv(t, `Channel inbox
Far :remote:INBOX
Near :local:INBOX
Create Near
SyncState *
`, func(e *env) {
		for i := range 3 {
			e.deliver("INBOX", crlf(fmt.Sprintf("From: bob@example.test\nSubject: m%d\nMessage-ID: <m%d@example.test>\n\n%s", i, i, body)))
		}
	})
	before := e.srv.deflate.sessions.Load()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, mbsync, "-V", "-c", rc, "-a").CombinedOutput()
	if err != nil {
		t.Fatalf("mbsync: %v\n%s", err, out)
	}
	if e.srv.deflate.sessions.Load() == before {
		t.Fatalf("mbsync did not turn COMPRESS on:\n%s", out)
	}
	files, _ := filepath.Glob(filepath.Join(local, "INBOX", "*", "*"))
	if len(files) != 3 {
		t.Fatalf("%d messages in the Maildir, want 3:\n%s", len(files), out)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(b), body) {
			t.Fatalf("message as synced: %q", b)
		}
	}
}

// TestCompressAppend50MB: a 50 MB APPEND (LITERAL+) under compression is
// stored whole and fetched back whole, with the peak growth of the heap
// (client and server in this process) bounded: the decompressor holds a
// fixed window whatever the ratio, and the literal streams.
func TestCompressAppend50MB(t *testing.T) {
	const size = 50 << 20
	e := newEnv(t, envOptions{maxMessageSize: 64 << 20})
	r := e.raw()
	r.compress()
	want := sha256.New()
	n, err := io.Copy(want, bigMessage(size))
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	stop := sampleHeap()
	// Counts what goes over the wire, under the compressed stream.
	var wire atomic.Int64
	cw := &countingWriter{w: r.c.(*deflateConn).Conn, n: &wire}
	r.c.(*deflateConn).zw.Reset(cw)
	if _, err := fmt.Fprintf(r.c, "a1 APPEND INBOX {%d+}\r\n", n); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(r.c, bigMessage(size)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(r.c, "\r\n"); err != nil {
		t.Fatal(err)
	}
	_, status, _ := r.readUntilTagged("a1")
	peak := stop()
	if !strings.HasPrefix(status, "OK") {
		t.Fatalf("APPEND: %q", status)
	}
	t.Logf("APPEND of %d bytes: %d bytes on the wire, peak heap growth %.1f MiB", n, wire.Load(), float64(peak)/(1<<20))
	if peak > 24<<20 {
		t.Errorf("peak heap growth %d MiB during a compressed 50 MB APPEND", peak>>20)
	}

	r.cmd("SELECT INBOX")
	fmt.Fprintf(r.c, "f1 FETCH 1 BODY.PEEK[]\r\n")
	l := r.line()
	var got int64
	if _, err := fmt.Sscanf(l[strings.LastIndexByte(l, '{'):], "{%d}", &got); err != nil || got != n {
		t.Fatalf("FETCH: %q (%d bytes, want %d)", l, got, n)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, r.r, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Fatal("the message fetched back differs from the one appended")
	}
	if rest := r.line(); rest != ")" {
		t.Fatalf("after the literal: %q", rest)
	}
	if l := r.line(); !strings.HasPrefix(l, "f1 OK") {
		t.Fatalf("FETCH: %q", l)
	}
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// BenchmarkCompressFetchFlags: `UID FETCH 1:* (FLAGS)` of the
// 100,000-message INBOX (bench_test.go's), with and without COMPRESS, by
// a client that only scans lines. It reports the bytes on the wire (TCP,
// TLS included) per fetch. Run with
//
//	go test -run '^$' -bench CompressFetchFlags -benchtime 10x ./imapd/
func BenchmarkCompressFetchFlags(b *testing.B) {
	env := newBenchEnv(b)
	wire := map[bool]float64{}
	for _, compressed := range []bool{false, true} {
		name := "Plain"
		if compressed {
			name = "Deflate"
		}
		b.Run(name, func(b *testing.B) {
			var n atomic.Int64
			tcp, err := net.Dial("tcp", env.addr)
			if err != nil {
				b.Fatal(err)
			}
			conn := tls.Client(&countingConn{Conn: tcp, n: &n}, &tls.Config{InsecureSkipVerify: true})
			b.Cleanup(func() { conn.Close() })
			r := &raw{t: b, c: conn, r: bufio.NewReaderSize(conn, 64<<10)}
			r.line() // greeting
			r.cmd("LOGIN " + env.user + " " + env.pass)
			if compressed {
				r.compress()
			}
			r.cmd("SELECT INBOX")
			var bytes int64
			for b.Loop() {
				start := n.Load()
				fmt.Fprintf(r.c, "f UID FETCH 1:* (FLAGS)\r\n")
				count := 0
				for {
					line, err := r.r.ReadSlice('\n')
					if err != nil {
						b.Fatal(err)
					}
					if line[0] == '*' {
						count++
						continue
					}
					if !strings.HasPrefix(string(line), "f OK") {
						b.Fatalf("UID FETCH: %q", line)
					}
					break
				}
				if count != benchMessages {
					b.Fatalf("UID FETCH 1:*: %d responses, want %d", count, benchMessages)
				}
				bytes += n.Load() - start
			}
			wire[compressed] = float64(bytes) / float64(b.N)
			b.ReportMetric(wire[compressed]/1e3, "wire-KB/op")
		})
	}
	if wire[true] > 0 && wire[false] > 0 {
		b.Logf("COMPRESS shrinks the fetch %.1f× (%.0f KB → %.0f KB on the wire)", wire[false]/wire[true], wire[false]/1e3, wire[true]/1e3)
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// BenchmarkCompressIdleSessions measures what an idle session costs the
// server with and without COMPRESS: b.N sessions log in (and turn
// COMPRESS on), run one NOOP and wait; the heap in use after a GC grows
// by the reported KB/session. The client side holds only its TLS
// connection: its NOOP is compressed once and sent as is by every session
// (each stream starts there), and it reads the answer without
// decompressing it. Run with
//
//	go test -run '^$' -bench CompressIdleSessions -benchtime 500x ./imapd/
func BenchmarkCompressIdleSessions(b *testing.B) {
	var noop bytes.Buffer
	zw, err := flate.NewWriter(&noop, flate.DefaultCompression)
	if err != nil {
		b.Fatal(err)
	}
	io.WriteString(zw, "n1 NOOP\r\n") //nolint:errcheck // a bytes.Buffer
	zw.Flush()                        //nolint:errcheck // a bytes.Buffer
	for _, compressed := range []bool{false, true} {
		name := "Plain"
		if compressed {
			name = "Deflate"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, envOptions{})
			heap := func() uint64 {
				runtime.GC()
				runtime.GC() // and the pools' victim caches
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return ms.HeapInuse
			}
			base := heap()
			var conns []net.Conn
			for b.Loop() {
				r := e.raw()
				if !compressed {
					r.cmd("NOOP")
				} else {
					r.cmd("COMPRESS DEFLATE")
					if _, err := r.c.Write(noop.Bytes()); err != nil {
						b.Fatal(err)
					}
					// The answer ends with the sync flush's empty stored
					// block.
					var got []byte
					for !bytes.HasSuffix(got, []byte{0, 0, 0xff, 0xff}) {
						c, err := r.r.ReadByte()
						if err != nil {
							b.Fatal(err)
						}
						got = append(got, c)
					}
				}
				conns = append(conns, r.c)
			}
			used := heap()
			b.ReportMetric(float64(int64(used)-int64(base))/float64(b.N)/1e3, "KB/session")
			for _, c := range conns {
				c.Close()
			}
		})
	}
}

// TestInflateRoundTrip: what Go's compress/flate and klauspost's flate
// write at every level, flushed at random points, the inflater reads back
// exactly (text, repetitive and random data; single bytes to more than a
// window).
func TestInflateRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	inputs := map[string][]byte{
		"empty":    nil,
		"one byte": {'x'},
		"text":     []byte(benchText(r, 200_000)),
		"repeats":  bytes.Repeat([]byte("* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"), 5000),
		"random":   randomBytes(100_000),
		"mixed":    append(append([]byte(benchText(r, 50_000)), randomBytes(40_000)...), bytes.Repeat([]byte{0}, 70_000)...),
	}
	type writer interface {
		io.Writer
		Flush() error
		Close() error
	}
	for name, in := range inputs {
		for level := -2; level <= 9; level++ {
			for _, lib := range []string{"compress/flate", "klauspost"} {
				var buf bytes.Buffer
				var w writer
				var err error
				if lib == "klauspost" {
					w, err = kflate.NewWriter(&buf, level)
				} else {
					w, err = flate.NewWriter(&buf, level)
				}
				if err != nil {
					t.Fatal(err)
				}
				for rest := in; len(rest) > 0; {
					n := min(len(rest), 1+r.IntN(40_000))
					w.Write(rest[:n]) //nolint:errcheck // a bytes.Buffer
					if r.IntN(2) == 0 {
						w.Flush() //nolint:errcheck // a bytes.Buffer
					}
					rest = rest[n:]
				}
				w.Close() //nolint:errcheck // a bytes.Buffer
				out, err := io.ReadAll(newInflater(bufio.NewReader(&buf)))
				if err != nil || !bytes.Equal(out, in) {
					t.Errorf("%s, %s level %d: %d bytes back of %d, %v", name, lib, level, len(out), len(in), err)
				}
			}
		}
	}
}

// FuzzInflate: whatever the input, the inflater neither panics nor loops,
// and what compress/flate decodes whole it decodes the same.
func FuzzInflate(f *testing.F) {
	for _, level := range []int{flate.HuffmanOnly, flate.NoCompression, flate.BestSpeed, flate.BestCompression} {
		var buf bytes.Buffer
		w, _ := flate.NewWriter(&buf, level)
		io.WriteString(w, "a NOOP\r\nb LOGIN user pass\r\nb LOGIN user pass\r\n") //nolint:errcheck // a bytes.Buffer
		w.Close()                                                                 //nolint:errcheck // a bytes.Buffer
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := io.ReadAll(io.LimitReader(newInflater(bufio.NewReader(bytes.NewReader(data))), 1<<24))
		want, werr := io.ReadAll(flate.NewReader(bytes.NewReader(data)))
		if werr == nil && (err != nil || !bytes.Equal(got, want)) {
			t.Fatalf("compress/flate reads %d bytes, the inflater %d (%v)", len(want), len(got), err)
		}
	})
}

// BenchmarkInflate: the inflater's speed on text, next to compress/flate's.
//
//	go test -run '^$' -bench Inflate ./imapd/
func BenchmarkInflate(b *testing.B) {
	text := []byte(benchText(rand.New(rand.NewPCG(9, 9)), 4<<20))
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.DefaultCompression)
	w.Write(text) //nolint:errcheck // a bytes.Buffer
	w.Close()     //nolint:errcheck // a bytes.Buffer
	for _, rd := range []struct {
		name string
		new  func(*bufio.Reader) io.Reader
	}{
		{"inflater", func(r *bufio.Reader) io.Reader { return newInflater(r) }},
		{"compress-flate", func(r *bufio.Reader) io.Reader { return flate.NewReader(r) }},
	} {
		b.Run(rd.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				n, err := io.Copy(io.Discard, rd.new(bufio.NewReader(bytes.NewReader(buf.Bytes()))))
				if err != nil || n != int64(len(text)) {
					b.Fatal(n, err)
				}
			}
		})
	}
}
