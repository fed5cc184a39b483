package smtpd_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/store"
)

// BenchmarkSubmission: 20 concurrent authenticated sessions (implicit TLS)
// submit small messages to local recipients (one per session, so INBOX
// row locks do not serialise them). Reports msgs/s, per-message latency
// and how long after the last 250 every message is visible over IMAP:
// each recipient has an IMAP session open (logged in before the clock
// starts) that asks STATUS INBOX (MESSAGES) until all have arrived.
func BenchmarkSubmission(b *testing.B) {
	const sessions = 20
	e := newEnv(b, 1<<20)
	imapAddr := e.imapServer(b)
	rcpts := make([]*store.Account, sessions)
	imaps := make([]*imapclient.Client, sessions)
	for i := range rcpts {
		var pass string
		rcpts[i], pass = e.account(b, fmt.Sprintf("r%d@example.org", i))
		ic, err := imapclient.DialTLS(imapAddr, &imapclient.Options{TLSConfig: e.clientTLS})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ic.Close() })
		if err := ic.Login(rcpts[i].Address, pass).Wait(); err != nil {
			b.Fatal(err)
		}
		imaps[i] = ic
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
	// Visible over IMAP: every recipient's STATUS, asked in parallel,
	// until the counts add up.
	for {
		counts := make([]int64, sessions)
		var sg sync.WaitGroup
		for i, ic := range imaps {
			sg.Go(func() {
				st, err := ic.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
				if err == nil && st.NumMessages != nil {
					counts[i] = int64(*st.NumMessages)
				}
			})
		}
		sg.Wait()
		var total int64
		for _, n := range counts {
			total += n
		}
		if total >= int64(b.N) {
			break
		}
		if time.Since(sent) > 30*time.Second {
			b.Fatalf("only %d of %d messages visible over IMAP", total, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	visible := time.Since(sent)
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(visible.Microseconds())/1000, "visible-over-imap-after-last-250-ms")
}
