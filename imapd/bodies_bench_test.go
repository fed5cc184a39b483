package imapd

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// Benchmarks of message bodies through the real TLS listener: a FETCH of
// 500 whole small messages (time and database round trips) and a 40 MB
// APPEND with a non-synchronising literal (throughput and heap). Neither
// needs BenchmarkIMAP's 100,000-message mailbox, so both are quick:
//
//	go test -run '^$' -bench 'FetchBodies500|AppendLiteralPlus40MB' -benchtime 5x ./imapd/

const (
	bodiesCount = 500
	bodiesSize  = 10_000 // about, per message
)

// BenchmarkFetchBodies500 times `UID FETCH 1:500 (BODY.PEEK[])` over 500
// messages of about 10 KB (imapclient reading every literal to the end,
// client and server sharing the machine) and reports the database round
// trips per message of one such FETCH:
//
//   - roundtrips/msg-cold: the first FETCH of these messages by a server
//     whose caches (cache.go) have never held them, on a store whose pool
//     served only the seeding and the login;
//   - roundtrips/msg: the timed FETCHes that follow on the same session,
//     answered from the caches where they can be.
//
// What rtCounter counts is said there; the statements of the cold FETCH
// are logged.
func BenchmarkFetchBodies500(b *testing.B) {
	ctx := context.Background()
	rt := &rtCounter{}
	url := storetest.NewURL(b)
	st, err := store.Open(ctx, url, store.Options{MaxConns: 8, Tracer: rt})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	e := newEnv(b, envOptions{st: st})
	mb, err := st.CreateMailbox(ctx, e.acc.ID, "Bodies", "")
	if err != nil {
		b.Fatal(err)
	}
	total, err := seedBodies(ctx, st, e.acc.ID, mb.ID)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d messages, %d bytes on average", bodiesCount, total/bodiesCount)
	// Benchmark hygiene, as in newBenchEnv: plan with the statistics
	// autovacuum would gather, not with none.
	if err := analyze(ctx, url); err != nil {
		b.Fatal(err)
	}

	c := e.login(nil)
	if _, err := c.Select("Bodies", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	rt.reset(true)
	start := time.Now()
	fetchBodies(b, c, total)
	took := time.Since(start)
	cold := rt.reset(false)
	b.Logf("cold FETCH: %v, %s%s", took.Round(10*time.Microsecond), cold, cold.summary())

	b.SetBytes(total)
	for b.Loop() {
		fetchBodies(b, c, total)
	}
	warm := rt.reset(false)
	b.ReportMetric(float64(cold.total())/bodiesCount, "roundtrips/msg-cold")
	b.ReportMetric(float64(warm.total())/float64(b.N*bodiesCount), "roundtrips/msg")
}

// fetchBodies runs UID FETCH 1:500 (BODY.PEEK[]), reads every literal to
// the end and checks that all of them, and only them, came.
func fetchBodies(b *testing.B, c *imapclient.Client, want int64) {
	cmd := c.Fetch(imap.UIDSet{{Start: 1, Stop: bodiesCount}}, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	var msgs, n int64
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		msgs++
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
	if msgs != bodiesCount || n != want {
		b.Fatalf("UID FETCH 1:%d: %d messages, %d bytes; want %d, %d", bodiesCount, msgs, n, bodiesCount, want)
	}
}

// seedBodies stores bodiesCount messages of about bodiesSize bytes with
// one BulkAppend and returns their total size.
func seedBodies(ctx context.Context, st *store.Store, accountID, mailboxID int64) (total int64, err error) {
	msgs := make([]*store.Spooled, 0, bodiesCount)
	defer func() {
		for _, m := range msgs {
			m.Close()
		}
	}()
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	dates := make([]time.Time, bodiesCount)
	for i := range bodiesCount {
		dates[i] = base.Add(time.Duration(i) * time.Hour)
		text := bodyMessage(rand.New(rand.NewPCG(uint64(i), 7)), i, dates[i])
		sp, err := store.Spool(strings.NewReader(text), 0)
		if err != nil {
			return 0, fmt.Errorf("spool message %d: %w", i, err)
		}
		msgs = append(msgs, sp)
		total += int64(len(text))
	}
	if _, err := st.BulkAppend(ctx, accountID, mailboxID, msgs, nil, dates); err != nil {
		return 0, fmt.Errorf("bulk append: %w", err)
	}
	return total, nil
}

// bodyMessage returns a message of about bodiesSize bytes as mail clients
// send them: text and HTML alternatives and a small base64 attachment.
func bodyMessage(r *rand.Rand, i int, date time.Time) string {
	h := benchHeader(r, i, date)
	mixed, alt := fmt.Sprintf("m%08x", r.Uint32()), fmt.Sprintf("a%08x", r.Uint32())
	text := benchText(r, 2800+r.IntN(400))
	attachment := make([]byte, 1800+r.IntN(400))
	for j := range attachment {
		attachment[j] = byte(r.Uint32())
	}
	enc := base64.StdEncoding.EncodeToString(attachment)
	var lines strings.Builder
	for len(enc) > 76 {
		lines.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	lines.WriteString(enc + "\r\n")
	fmt.Fprintf(h, "Content-Type: multipart/mixed; boundary=%q\r\n\r\n", mixed)
	fmt.Fprintf(h, "This is a multi-part message in MIME format.\r\n--%s\r\nContent-Type: multipart/alternative; boundary=%q\r\n\r\n", mixed, alt)
	fmt.Fprintf(h, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n%s", alt, text)
	fmt.Fprintf(h, "--%s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"+
		"<html><head><meta charset=\"utf-8\"></head><body>\r\n<p>%s</p>\r\n</body></html>\r\n--%s--\r\n",
		alt, text, alt)
	fmt.Fprintf(h, "--%s\r\nContent-Type: application/pdf; name=\"report-%d.pdf\"\r\nContent-Disposition: attachment; filename=\"report-%d.pdf\"\r\n"+
		"Content-Transfer-Encoding: base64\r\n\r\n%s--%s--\r\n", mixed, i, i, lines.String(), mixed)
	return h.String()
}

// analyze runs ANALYZE on the message tables behind the store's back.
func analyze(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "ANALYZE mailbox_messages, messages, message_chunks"); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	return nil
}

// rtCounter counts the database round trips of a store (store.Options.
// Tracer, so every pooled connection and the LISTEN connection):
//
//   - each Query, QueryRow and Exec, BEGIN and COMMIT included
//     (TraceQueryStart);
//   - each batch as one, however many statements it carries
//     (TraceBatchStart, not TraceBatchQuery);
//   - each statement preparation that reached the server (a statement
//     new to its connection costs a Prepare before its Query);
//   - each COPY FROM.
//
// Not seen, so not counted: pgxpool's liveness ping of a connection idle
// for over a second before it lends it, and the extra trip in which a
// batch prepares statements new to its connection.
type rtCounter struct {
	queries, batches, prepares, copies atomic.Int64

	mu         sync.Mutex
	record     bool
	statements []string
}

// rtCount is what an rtCounter counted between two resets.
type rtCount struct {
	queries, batches, prepares, copies int64
	statements                         []string // when recorded
}

func (c rtCount) total() int64 { return c.queries + c.batches + c.prepares + c.copies }

func (c rtCount) String() string {
	return fmt.Sprintf("%d round trips: %d queries, %d batches, %d prepares, %d copies",
		c.total(), c.queries, c.batches, c.prepares, c.copies)
}

// summary lists the distinct statements recorded, with how many times
// each ran, one a line.
func (c rtCount) summary() string {
	var order []string
	times := map[string]int{}
	for _, s := range c.statements {
		if times[s] == 0 {
			order = append(order, s)
		}
		times[s]++
	}
	var sb strings.Builder
	for _, s := range order {
		fmt.Fprintf(&sb, "\n\t%d× %s", times[s], s)
	}
	return sb.String()
}

// reset returns the counts so far and starts again; record says whether
// to keep the SQL of each query and batch until the next reset.
func (t *rtCounter) reset(record bool) rtCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := rtCount{queries: t.queries.Swap(0), batches: t.batches.Swap(0), prepares: t.prepares.Swap(0),
		copies: t.copies.Swap(0), statements: t.statements}
	t.record, t.statements = record, nil
	return c
}

func (t *rtCounter) note(kind, sql string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.record {
		sql = strings.Join(strings.Fields(sql), " ")
		if len(sql) > 100 {
			sql = sql[:100] + "…"
		}
		t.statements = append(t.statements, kind+": "+sql)
	}
}

// The methods below implement pgx.QueryTracer, pgx.BatchTracer,
// pgx.PrepareTracer and pgx.CopyFromTracer.

func (t *rtCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	t.queries.Add(1)
	t.note("query", d.SQL)
	return ctx
}

func (t *rtCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (t *rtCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	t.batches.Add(1)
	t.note("batch", fmt.Sprintf("%d statements", d.Batch.Len()))
	return ctx
}

func (t *rtCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (t *rtCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (t *rtCounter) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	return ctx
}

// TracePrepareEnd counts a preparation unless the connection had the
// statement already (no trip then).
func (t *rtCounter) TracePrepareEnd(_ context.Context, _ *pgx.Conn, d pgx.TracePrepareEndData) {
	if !d.AlreadyPrepared {
		t.prepares.Add(1)
		t.note("prepare", "")
	}
}

func (t *rtCounter) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	t.copies.Add(1)
	t.note("copy", d.TableName.Sanitize())
	return ctx
}

func (t *rtCounter) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

// BenchmarkAppendLiteralPlus40MB times one APPEND of a 40 MB message (a
// base64 attachment, different each time so nothing is deduplicated) sent
// as a non-synchronising literal ({n+}) over a raw TLS connection, until
// its tagged OK. It reports MB/s and heap-MB, the peak growth of the heap
// in use during the APPEND in MiB; client and server run in this one
// process, so the figure is both together (the client streams the message
// from a generator and holds none of it).
func BenchmarkAppendLiteralPlus40MB(b *testing.B) {
	const size = 40 << 20
	e := newEnv(b, envOptions{maxMessageSize: 64 << 20})
	r := e.raw()
	bodyLen, err := io.Copy(io.Discard, bigMessage(size))
	if err != nil {
		b.Fatal(err)
	}
	var peak uint64
	i := 0
	b.SetBytes(bodyLen + int64(len(appendSeqHeader(0))))
	for b.Loop() {
		b.StopTimer()
		i++
		head := appendSeqHeader(i)
		msg := io.MultiReader(strings.NewReader(head), bigMessage(size))
		tag := fmt.Sprintf("p%d", i)
		runtime.GC()
		stop := sampleHeap()
		b.StartTimer()
		if _, err := fmt.Fprintf(r.c, "%s APPEND INBOX {%d+}\r\n", tag, int64(len(head))+bodyLen); err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(r.c, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.WriteString(r.c, "\r\n"); err != nil {
			b.Fatal(err)
		}
		_, status, _ := r.readUntilTagged(tag)
		b.StopTimer()
		peak = max(peak, stop())
		if !strings.HasPrefix(status, "OK") {
			b.Fatalf("APPEND: %q", status)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/(1<<20), "heap-MB")
}

// appendSeqHeader is a first header field that makes each APPEND's
// content new; its length does not depend on i.
func appendSeqHeader(i int) string { return fmt.Sprintf("X-Bench-Seq: %08d\r\n", i) }

// sampleHeap samples the heap in use (MemStats.HeapInuse, read through
// runtime/metrics, which does not stop the world) every 2 ms; the
// function it returns stops sampling and returns the peak growth over
// the heap in use at the start.
func sampleHeap() (stop func() uint64) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	inuse := func() uint64 {
		metrics.Read(samples)
		return samples[0].Value.Uint64() + samples[1].Value.Uint64()
	}
	base := inuse()
	done, result := make(chan struct{}), make(chan uint64)
	go func() {
		var top uint64
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if n := inuse(); n > base {
				top = max(top, n-base)
			}
			select {
			case <-done:
				result <- top
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		return <-result
	}
}
