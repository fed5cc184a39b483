package imapd

import (
	"bufio"
	"compress/flate"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// BenchmarkResync is issue 12's phone reconnect: a 100,000-message INBOX,
// the client away while another mailstack process (a second server on
// the same database) makes 10 flag changes, 5 expunges and 5 deliveries,
// then the client reconnects and catches up by
//
//   - FullFlags: SELECT, then UID FETCH 1:* (FLAGS), as without CONDSTORE;
//   - ChangedSince: SELECT (CONDSTORE), then UID FETCH 1:* (FLAGS)
//     (CHANGEDSINCE h), which finds flag changes and new messages only;
//   - Qresync: ENABLE QRESYNC, SELECT INBOX (QRESYNC (uidvalidity h)).
//
// each without and with COMPRESS=DEFLATE (turned on after login, outside
// the measurement).
//
// The time is that of the catch-up commands (login excluded); wire-B/op
// counts the bytes both ways on the TCP connection, TLS included. Run
// with
//
//	go test -run '^$' -bench Resync -benchtime 20x ./imapd/
func BenchmarkResync(b *testing.B) {
	ctx := context.Background()
	env := newBenchEnvWith(b, benchMessages, benchMessage, false, nil)
	// Server 2: another process on the same database.
	st2, err := store.Open(ctx, env.url, store.Options{MaxConns: 8})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st2.Close)
	addr1, addr2 := env.addr, serveBench(b, st2)
	login := func(addr string) *resyncConn {
		c := dialResync(b, addr)
		c.cmd("l LOGIN " + env.user + " " + env.pass)
		return c
	}
	// The other device, on server 2.
	other := login(addr2)
	other.cmd("s SELECT INBOX")
	next := uint32(1)
	change := func() {
		for i := 0; i < 10; i++ {
			other.cmd(fmt.Sprintf(`f UID STORE %d +FLAGS.SILENT (\Flagged $Seen%d)`, next, i))
			next += 7
		}
		var del []string
		for i := 0; i < 5; i++ {
			del = append(del, strconv.Itoa(int(next)))
			next += 11
		}
		other.cmd(`d UID STORE ` + strings.Join(del, ",") + ` +FLAGS.SILENT (\Deleted)`)
		other.cmd(`x UID EXPUNGE ` + strings.Join(del, ","))
		for i := 0; i < 5; i++ {
			if _, err := st2.Append(ctx, env.accountID, env.inboxID, strings.NewReader(crlf(simpleMsg)), 0, nil, time.Time{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	modes := []struct {
		name string
		sync func(c *resyncConn, uidv string, h uint64) []string
	}{
		{"FullFlags", func(c *resyncConn, _ string, _ uint64) []string {
			sel := c.cmd("s SELECT INBOX")
			c.cmd("f UID FETCH 1:* (FLAGS)")
			return sel
		}},
		{"ChangedSince", func(c *resyncConn, _ string, h uint64) []string {
			sel := c.cmd("s SELECT INBOX (CONDSTORE)")
			c.cmd(fmt.Sprintf("f UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)", h))
			return sel
		}},
		{"Qresync", func(c *resyncConn, uidv string, h uint64) []string {
			c.cmd("e ENABLE QRESYNC")
			return c.cmd(fmt.Sprintf("s SELECT INBOX (QRESYNC (%s %d))", uidv, h))
		}},
	}
	hmsRe := regexp.MustCompile(`HIGHESTMODSEQ (\d+)`)
	uidvRe := regexp.MustCompile(`UIDVALIDITY (\d+)`)
	for _, compressed := range []bool{false, true} {
		for _, m := range modes {
			name := m.name
			if compressed {
				name += "Deflate"
			}
			b.Run(name, func(b *testing.B) {
				// The phone's state as of its last sync.
				c := login(addr1)
				sel := c.cmd("s SELECT INBOX")
				c.conn.Close()
				var uidv string
				var h uint64
				for _, l := range sel {
					if s := uidvRe.FindStringSubmatch(l); s != nil {
						uidv = s[1]
					}
					if s := hmsRe.FindStringSubmatch(l); s != nil {
						h, _ = strconv.ParseUint(s[1], 10, 64)
					}
				}
				var bytes int64
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					change()
					c := login(addr1)
					if compressed {
						c.compress()
					}
					before := c.count()
					b.StartTimer()
					sel := m.sync(c, uidv, h)
					b.StopTimer()
					bytes += c.count() - before
					c.conn.Close()
					for _, l := range sel {
						if s := hmsRe.FindStringSubmatch(l); s != nil {
							h, _ = strconv.ParseUint(s[1], 10, 64)
						}
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(bytes)/float64(b.N), "wire-B/op")
			})
		}
	}
}

// resyncConn is a raw IMAP client over TLS that counts the bytes on its
// TCP connection.
type resyncConn struct {
	b    *testing.B
	conn net.Conn
	w    io.Writer // conn, or a compressor over it
	tcp  *countConn
	r    *bufio.Reader
}

type countConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func dialResync(b *testing.B, addr string) *resyncConn {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	cc := &countConn{Conn: nc}
	tc := tls.Client(cc, &tls.Config{InsecureSkipVerify: true})
	c := &resyncConn{b: b, conn: tc, w: tc, tcp: cc, r: bufio.NewReaderSize(tc, 64<<10)}
	if _, err := c.r.ReadSlice('\n'); err != nil {
		b.Fatal(err)
	}
	return c
}

func (c *resyncConn) count() int64 { return c.tcp.n.Load() }

// compress turns COMPRESS=DEFLATE on, with the standard library's flate
// on the client side (a sync flush per command, as clients do).
func (c *resyncConn) compress() {
	c.cmd("z COMPRESS DEFLATE")
	zw, err := flate.NewWriter(c.conn, flate.DefaultCompression)
	if err != nil {
		c.b.Fatal(err)
	}
	c.w = &deflateConn{Conn: c.conn, zw: zw}
	c.r = bufio.NewReaderSize(flate.NewReader(c.r), 64<<10)
}

// cmd sends a tagged command line and reads up to its tagged OK,
// returning the untagged lines other than FETCH (counted only).
func (c *resyncConn) cmd(line string) []string {
	tag, _, _ := strings.Cut(line, " ")
	if _, err := fmt.Fprintf(c.w, "%s\r\n", line); err != nil {
		c.b.Fatal(err)
	}
	var out []string
	for {
		l, err := c.r.ReadSlice('\n')
		if err != nil {
			c.b.Fatal(err)
		}
		if strings.HasPrefix(string(l), tag+" ") {
			if !strings.HasPrefix(string(l), tag+" OK") {
				c.b.Fatalf("%s: %s", line, l)
			}
			return out
		}
		if !strings.Contains(string(l), " FETCH (") {
			out = append(out, strings.TrimRight(string(l), "\r\n"))
		}
	}
}
