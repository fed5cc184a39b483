package smtpd_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/store"
)

// BenchmarkSubmission: 20 concurrent authenticated sessions (implicit TLS)
// submit small messages to local recipients (one per session, so INBOX
// row locks do not serialise them). Reports msgs/s, per-message latency
// and how long after the last 250 every message is visible in the store
// (zero by construction: delivery commits before the 250).
func BenchmarkSubmission(b *testing.B) {
	const sessions = 20
	e := newEnv(b, 1<<20)
	ctx := context.Background()
	rcpts := make([]*store.Account, sessions)
	for i := range rcpts {
		rcpts[i], _ = e.account(b, fmt.Sprintf("r%d@example.org", i))
	}
	clients := make([]*smtp.Client, sessions)
	for i := range clients {
		clients[i] = e.login(b, true, "alice@example.org", e.alicePass)
	}
	var next atomic.Int64
	lat := make([][]time.Duration, sessions)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := []string{rcpts[i].Address}
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				msg := crlf(fmt.Sprintf("From: Alice <alice@example.org>\nTo: %s\nSubject: bench %d\nMessage-ID: <%d@bench>\n\nHello number %d.\n", to[0], n, n, n))
				t0 := time.Now()
				if err := send(clients[i], "alice@example.org", to, msg); err != nil {
					errc <- err
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	sent := time.Now()
	elapsed := sent.Sub(start)
	b.StopTimer()
	close(errc)
	for err := range errc {
		b.Fatal(err)
	}
	// Time until all are visible (a store read, as an IMAP SELECT/STATUS
	// would see them).
	for {
		var total int64
		for _, r := range rcpts {
			mb, err := e.st.MailboxByName(ctx, r.ID, "INBOX")
			if err != nil {
				b.Fatal(err)
			}
			total += int64(mb.Messages)
		}
		if total >= int64(b.N) {
			break
		}
		if time.Since(sent) > 30*time.Second {
			b.Fatalf("only %d of %d messages visible", total, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	visible := time.Since(sent)
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(visible.Microseconds())/1000, "visible-after-last-250-ms")
}
