package imapd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// Issue 3's benchmarks: a mailbox of 100,000 messages loaded through
// store.BulkAppend, driven over TLS with imapclient against the real
// server. Run with
//
//	go test -run '^$' -bench . -benchtime 5x ./imapd/
//
// The mailbox is seeded once per BenchmarkIMAP run (the sub-benchmarks
// share it); plain `go test` never seeds it. Benchmarks that need no
// large mailbox (bodies fetched and appended) are in bodies_bench_test.go.

const (
	benchMessages   = 100_000
	benchUnseenPct  = 30
	benchFlaggedPct = 5
	benchBigSize    = 50 << 20
)

// BenchmarkIMAP seeds the large mailbox once, then runs each operation as a
// sub-benchmark.
func BenchmarkIMAP(b *testing.B) {
	env := newBenchEnv(b)
	b.Run("Select", env.benchSelect)
	b.Run("SelectIMAP4rev2", env.benchSelectRev2)
	b.Run("UIDFetchFlagsAll", env.benchFetchFlags)
	b.Run("UIDFetchFlagsAllRaw", env.benchFetchFlagsRaw)
	b.Run("UIDSearchUnseen", env.benchSearchUnseen)
	b.Run("UIDSearchSubject", env.benchSearchSubject)
	b.Run("FetchEnvelopeLast500", env.benchFetchEnvelopes)
	b.Run("StreamBody50MB", env.benchStreamBig)
	b.Run("UIDBatches", env.benchUIDBatches)
	b.Run("UIDSortReverseDate", env.benchSortReverseDate) // sort_bench_test.go
	b.Run("UIDSortSubject", env.benchSortSubject)
	b.Run("UIDThreadReferences", env.benchThreadReferences)
	b.Run("UIDThreadOrderedSubject", env.benchThreadOrderedSubject)
}

type benchEnv struct {
	st                 *store.Store
	url                string // the database, for a second server on it
	addr               string
	user, pass         string
	accountID, inboxID int64
	unseen             int
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	return newBenchEnvWith(b, benchMessages, benchMessage, true, nil)
}

// newBenchEnvWith seeds the mailbox with gen's messages, adds the big
// message if big, and runs prepare (if not nil) before the vacuum.
func newBenchEnvWith(b *testing.B, n int, gen func(r *rand.Rand, i int, date time.Time) string, big bool,
	prepare func(ctx context.Context, st *store.Store, conn *pgx.Conn)) *benchEnv {
	b.Helper()
	ctx := context.Background()
	url := storetest.NewURL(b)
	st, err := store.Open(ctx, url, store.Options{MaxConns: 8})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	if _, err := st.CreateDomain(ctx, "example.org", "mail", []byte("key")); err != nil {
		b.Fatal(err)
	}
	acc, pass, inbox := newAccount(b, st, "bench@example.org", "bench-main-pw", "bench")
	start := time.Now()
	unseen, err := seedMailboxWith(ctx, st, acc.ID, inbox, n, gen)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d messages in %v", n, time.Since(start).Round(time.Millisecond))

	if big {
		bigMb, err := st.CreateMailbox(ctx, acc.ID, "Big", "")
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if _, err := st.Append(ctx, acc.ID, bigMb.ID, bigMessage(benchBigSize), 0, nil, time.Time{}); err != nil {
			b.Fatal(err)
		}
		b.Logf("stored a %d MB message in %v", benchBigSize>>20, time.Since(start).Round(time.Millisecond))
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	if prepare != nil {
		prepare(ctx, st, conn)
	}
	// Benchmark hygiene, not store logic: measure the steady state that
	// autovacuum reaches after a bulk load, rather than racing it.
	start = time.Now()
	if _, err := conn.Exec(ctx, "VACUUM (ANALYZE) mailbox_messages, messages, message_chunks, message_text, expunged"); err != nil {
		b.Fatal(err)
	}
	conn.Close(ctx)
	b.Logf("vacuum analyze: %v", time.Since(start).Round(time.Millisecond))

	return &benchEnv{st: st, url: url, addr: serveBench(b, st), user: acc.Address, pass: pass,
		accountID: acc.ID, inboxID: inbox, unseen: unseen}
}

// serveBench runs an IMAP server on st at a 127.0.0.1 port.
func serveBench(b *testing.B, st *store.Store) string {
	srv := New(st, Options{TLSConfig: testTLS(b), Logger: testLogger(b)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// seedMailbox bulk-loads n varied messages of 2–4 KB; benchUnseenPct % of
// them are unseen and benchFlaggedPct % flagged. Messages are generated and
// spooled by a few goroutines while BulkAppendFunc writes.
func seedMailbox(ctx context.Context, st *store.Store, accountID, mailboxID int64, n int) (unseen int, err error) {
	return seedMailboxWith(ctx, st, accountID, mailboxID, n, benchMessage)
}

// seedMailboxWith is seedMailbox with messages made by gen.
func seedMailboxWith(ctx context.Context, st *store.Store, accountID, mailboxID int64, n int,
	gen func(r *rand.Rand, i int, date time.Time) string) (unseen int, err error) {
	type item struct {
		msg   *store.BulkMessage
		err   error
		ready chan struct{}
	}
	workers := max(2, runtime.GOMAXPROCS(0))
	queue := make(chan *item, 4*workers*64)
	jobs := make(chan func(), workers*64)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				j()
			}
		}()
	}
	stop := make(chan struct{})
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	seen := make([]bool, n)
	for i := range n {
		r := rand.New(rand.NewPCG(uint64(i), 42))
		seen[i] = r.IntN(100) >= benchUnseenPct
		if !seen[i] {
			unseen++
		}
	}
	go func() {
		defer close(jobs)
		defer close(queue)
		for i := range n {
			it := &item{ready: make(chan struct{})}
			select {
			case queue <- it:
			case <-stop:
				return
			}
			jobs <- func() {
				defer close(it.ready)
				r := rand.New(rand.NewPCG(uint64(i), 42))
				r.IntN(100) // the seen draw above
				date := base.Add(time.Duration(i) * 15 * time.Minute)
				sp, err := store.Spool(strings.NewReader(gen(r, i, date)), 0)
				if err != nil {
					it.err = err
					return
				}
				var flags []string
				if seen[i] {
					flags = append(flags, `\Seen`)
				}
				if r.IntN(100) < benchFlaggedPct {
					flags = append(flags, `\Flagged`)
				}
				if r.IntN(50) == 0 {
					flags = append(flags, "$Work")
				}
				it.msg = &store.BulkMessage{Msg: sp, Flags: flags, InternalDate: date.Add(time.Duration(r.IntN(600)) * time.Second)}
			}
		}
	}()
	_, err = st.BulkAppendFunc(ctx, accountID, mailboxID, func() (*store.BulkMessage, error) {
		it, ok := <-queue
		if !ok {
			return nil, nil
		}
		<-it.ready
		return it.msg, it.err
	})
	// On error, stop the producer and release what it made.
	close(stop)
	for it := range queue {
		<-it.ready
		if it.msg != nil {
			it.msg.Msg.Close()
		}
	}
	wg.Wait()
	return unseen, err
}

var (
	benchFirst = []string{"Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoë"}
	benchLast  = []string{"Smith", "Müller", "Garcia", "Rossi", "Dubois", "Novak", "Kowalski", "Jensen", "Silva", "Tanaka"}
	benchHosts = []string{"example.com", "example.net", "mail.example.org", "lists.example.com", "corp.example"}
	benchWords = strings.Fields("the quick brown fox jumps over lazy dog meeting report invoice project update " +
		"schedule review budget quarterly release notes feedback customer order shipping delivery " +
		"thanks regards please attached draft final agenda minutes lunch tomorrow friday deadline")
	benchSubjects = []string{"Re: ", "Fwd: ", "", "", "[list] ", "Re: Re: "}
)

func benchAddr(r *rand.Rand) (name, addr string) {
	f, l := benchFirst[r.IntN(len(benchFirst))], benchLast[r.IntN(len(benchLast))]
	return f + " " + l, strings.ToLower(strings.ReplaceAll(f, "ë", "e")) + "." + strings.ToLower(strings.ReplaceAll(l, "ü", "ue")) +
		"@" + benchHosts[r.IntN(len(benchHosts))]
}

func benchText(r *rand.Rand, size int) string {
	var sb strings.Builder
	line := 0
	for sb.Len() < size {
		w := benchWords[r.IntN(len(benchWords))]
		if line+len(w) > 72 {
			sb.WriteString("\r\n")
			line = 0
		} else if line > 0 {
			sb.WriteByte(' ')
			line++
		}
		sb.WriteString(w)
		line += len(w)
	}
	sb.WriteString("\r\n")
	return sb.String()
}

// benchMessage returns a realistic message of about 2–4 KB.
func benchMessage(r *rand.Rand, i int, date time.Time) string {
	h := benchHeader(r, i, date)
	size := 1200 + r.IntN(2000)
	if r.IntN(5) == 0 {
		boundary := fmt.Sprintf("b%08x", r.Uint32())
		fmt.Fprintf(h, "Content-Type: multipart/alternative; boundary=%q\r\n\r\n", boundary)
		text := benchText(r, size/2)
		fmt.Fprintf(h, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s--%s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>%s</p></body></html>\r\n--%s--\r\n",
			boundary, text, boundary, text, boundary)
		return h.String()
	}
	h.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
	h.WriteString(benchText(r, size))
	return h.String()
}

// benchHeader returns a realistic header block up to MIME-Version, for
// the caller to add Content-Type and a body.
func benchHeader(r *rand.Rand, i int, date time.Time) *strings.Builder {
	fromName, from := benchAddr(r)
	_, to := benchAddr(r)
	subject := benchSubjects[r.IntN(len(benchSubjects))] + strings.Join([]string{
		benchWords[r.IntN(len(benchWords))], benchWords[r.IntN(len(benchWords))], benchWords[r.IntN(len(benchWords))],
	}, " ") + fmt.Sprintf(" #%d", i)
	var h strings.Builder
	fmt.Fprintf(&h, "Return-Path: <%s>\r\n", from)
	fmt.Fprintf(&h, "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\r\n\tby mail.example.org with ESMTPS id %08x\r\n\tfor <bench@example.org>; %s\r\n",
		r.IntN(9), benchHosts[r.IntN(len(benchHosts))], r.IntN(9), benchHosts[r.IntN(len(benchHosts))], r.IntN(250), r.Uint32(), date.Format(time.RFC1123Z))
	fmt.Fprintf(&h, "Authentication-Results: mail.example.org;\r\n\tspf=pass smtp.mailfrom=%s;\r\n\tdkim=pass header.d=%s\r\n", from, from[strings.IndexByte(from, '@')+1:])
	if strings.ContainsAny(fromName, "ëü") {
		fmt.Fprintf(&h, "From: =?utf-8?q?%s?= <%s>\r\n", strings.NewReplacer(" ", "_", "ë", "=C3=AB", "ü", "=C3=BC").Replace(fromName), from)
	} else {
		fmt.Fprintf(&h, "From: %s <%s>\r\n", fromName, from)
	}
	fmt.Fprintf(&h, "To: bench@example.org, %s\r\n", to)
	if r.IntN(4) == 0 {
		_, cc := benchAddr(r)
		fmt.Fprintf(&h, "Cc: %s\r\n", cc)
	}
	fmt.Fprintf(&h, "Subject: %s\r\n", subject)
	fmt.Fprintf(&h, "Date: %s\r\n", date.Format(time.RFC1123Z))
	r.Uint32() // was the Message-ID's; the draws after it stay the same
	fmt.Fprintf(&h, "Message-ID: %s\r\n", benchMessageID(i))
	if i > 0 && r.IntN(3) == 0 {
		// A reply to one of the last 200 messages, in a thread whose
		// root is not in the mailbox.
		p := i - 1 - r.IntN(min(i, 200))
		fmt.Fprintf(&h, "In-Reply-To: %s\r\nReferences: <%d.0@example.com> %s\r\n", benchMessageID(p), p/50, benchMessageID(p))
	}
	h.WriteString("MIME-Version: 1.0\r\n")
	return &h
}

// benchMessageID is the Message-ID benchHeader gives message i, so that
// replies can refer to it.
func benchMessageID(i int) string {
	return fmt.Sprintf("<%d.%08x@bench.example.org>", i, uint32(i)*2654435761)
}

// bigMessage returns a reader of a message of about size bytes (a base64
// attachment), generated on the fly.
func bigMessage(size int) io.Reader {
	head := "From: big@example.com\r\nTo: bench@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=BIG\r\n\r\n--BIG\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n" +
		"--BIG\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	tail := "--BIG--\r\n"
	line := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2", 2)[:76] + "\r\n"
	lines := (size - len(head) - len(tail)) / len(line)
	return io.MultiReader(strings.NewReader(head), &repeatReader{s: line, n: lines}, strings.NewReader(tail))
}

type repeatReader struct {
	s   string
	n   int
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 && r.n > 0 {
		k := copy(p, r.s[r.off:])
		p, total, r.off = p[k:], total+k, r.off+k
		if r.off == len(r.s) {
			r.off, r.n = 0, r.n-1
		}
	}
	if total == 0 && r.n == 0 {
		return 0, io.EOF
	}
	return total, nil
}

func (e *benchEnv) dial(b *testing.B, mailbox string) *imapclient.Client {
	b.Helper()
	c, err := imapclient.DialTLS(e.addr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.Login(e.user, e.pass).Wait(); err != nil {
		b.Fatal(err)
	}
	if mailbox != "" {
		if _, err := c.Select(mailbox, nil).Wait(); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

func (e *benchEnv) benchSelect(b *testing.B) {
	e.benchSelectLoop(b, e.dial(b, ""))
}

func (e *benchEnv) benchSelectLoop(b *testing.B, c *imapclient.Client) {
	b.ResetTimer()
	for b.Loop() {
		data, err := c.Select("INBOX", nil).Wait()
		if err != nil {
			b.Fatal(err)
		}
		if data.NumMessages != benchMessages {
			b.Fatalf("SELECT: %d messages, want %d", data.NumMessages, benchMessages)
		}
		b.StopTimer()
		if err := c.Unselect().Wait(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// benchSelectRev2 is SELECT for an IMAP4rev2 client: a LIST response
// (one children query) instead of [UNSEEN n] (one first-unseen query).
func (e *benchEnv) benchSelectRev2(b *testing.B) {
	c := e.dial(b, "")
	if _, err := c.Enable(imap.CapIMAP4rev2).Wait(); err != nil {
		b.Fatal(err)
	}
	e.benchSelectLoop(b, c)
}

func (e *benchEnv) benchFetchFlags(b *testing.B) {
	c := e.dial(b, "INBOX")
	b.ResetTimer()
	for b.Loop() {
		cmd := c.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true})
		n := 0
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			if _, err := msg.Collect(); err != nil {
				b.Fatal(err)
			}
			n++
		}
		if err := cmd.Close(); err != nil {
			b.Fatal(err)
		}
		if n != benchMessages {
			b.Fatalf("UID FETCH 1:* returned %d messages, want %d", n, benchMessages)
		}
	}
}

// benchFetchFlagsRaw is benchFetchFlags with a client that only scans
// lines: imapclient's parsing of 100,000 responses costs about as much CPU
// as the server's work and competes with it for the same two cores, so
// this variant shows the server's own cost.
func (e *benchEnv) benchFetchFlagsRaw(b *testing.B) {
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	r := bufio.NewReaderSize(conn, 64<<10)
	// untilTagged reads responses up to the tagged one and counts the
	// untagged FETCH lines.
	untilTagged := func(tag string) int {
		n := 0
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if bytes.HasPrefix(line, []byte(tag+" ")) {
				if !bytes.HasPrefix(line, []byte(tag+" OK")) {
					b.Fatalf("%s", line)
				}
				return n
			}
			if bytes.HasPrefix(line, []byte("* ")) && bytes.Contains(line, []byte(" FETCH (")) {
				n++
			}
		}
	}
	if _, err := r.ReadSlice('\n'); err != nil { // greeting
		b.Fatal(err)
	}
	fmt.Fprintf(conn, "l LOGIN %q %q\r\ns SELECT INBOX\r\n", e.user, e.pass)
	untilTagged("l")
	untilTagged("s")
	b.ResetTimer()
	for b.Loop() {
		io.WriteString(conn, "f UID FETCH 1:* (UID FLAGS)\r\n")
		if n := untilTagged("f"); n != benchMessages {
			b.Fatalf("UID FETCH 1:* returned %d messages, want %d", n, benchMessages)
		}
	}
}

func (e *benchEnv) benchSearchUnseen(b *testing.B) {
	c := e.dial(b, "INBOX")
	b.ResetTimer()
	for b.Loop() {
		data, err := c.UIDSearch(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
		if err != nil {
			b.Fatal(err)
		}
		if n := len(data.AllUIDs()); n != e.unseen {
			b.Fatalf("UID SEARCH UNSEEN: %d results, want %d", n, e.unseen)
		}
	}
}

// benchSearchSubject measures a search the store evaluates in Go (decoded
// header fields), over every message of the mailbox.
func (e *benchEnv) benchSearchSubject(b *testing.B) {
	c := e.dial(b, "INBOX")
	criteria := &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "INVOICE"}}}
	b.ResetTimer()
	for b.Loop() {
		data, err := c.UIDSearch(criteria, nil).Wait()
		if err != nil {
			b.Fatal(err)
		}
		if len(data.AllUIDs()) == 0 {
			b.Fatal("UID SEARCH SUBJECT invoice found nothing")
		}
	}
}

func (e *benchEnv) benchFetchEnvelopes(b *testing.B) {
	c := e.dial(b, "INBOX")
	set := imap.SeqSet{{Start: benchMessages - 499, Stop: benchMessages}}
	b.ResetTimer()
	for b.Loop() {
		msgs, err := c.Fetch(set, &imap.FetchOptions{Envelope: true}).Collect()
		if err != nil {
			b.Fatal(err)
		}
		if len(msgs) != 500 || msgs[499].Envelope == nil || msgs[499].Envelope.Subject == "" {
			b.Fatalf("FETCH ENVELOPE: %d messages", len(msgs))
		}
	}
}

// benchStreamBig fetches the 50 MB message to io.Discard and reports the
// peak heap growth of the process (server and client both run here)
// sampled every few milliseconds.
func (e *benchEnv) benchStreamBig(b *testing.B) {
	c := e.dial(b, "Big")
	var peak uint64
	b.SetBytes(benchBigSize)
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapAlloc
		done := make(chan struct{})
		sampled := make(chan uint64)
		go func() {
			var top uint64
			t := time.NewTicker(2 * time.Millisecond)
			defer t.Stop()
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > base && ms.HeapAlloc-base > top {
					top = ms.HeapAlloc - base
				}
				select {
				case <-done:
					sampled <- top
					return
				case <-t.C:
				}
			}
		}()
		b.StartTimer()
		cmd := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
		var n int64
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			for item := msg.Next(); item != nil; item = msg.Next() {
				if body, ok := item.(imapclient.FetchItemDataBodySection); ok {
					k, err := io.Copy(io.Discard, body.Literal)
					if err != nil {
						b.Fatal(err)
					}
					n += k
				}
			}
		}
		if err := cmd.Close(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		close(done)
		peak = max(peak, <-sampled)
		if n < benchBigSize-1<<20 || n > benchBigSize {
			b.Fatalf("streamed %d bytes, want about %d", n, benchBigSize)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/(1<<20), "heapMB")
}
