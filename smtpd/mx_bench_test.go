package smtpd_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/rspamd"
	"github.com/mailstack/mailstack/internal/rspamd/rspamdtest"
	"github.com/mailstack/mailstack/smtpd"
	"github.com/mailstack/mailstack/store"
)

// BenchmarkMXInbound: 20 concurrent sending servers (STARTTLS, one
// connection each, as many as the default per-IP limit allows) deliver
// DKIM-signed messages that pass SPF, DKIM and DMARC p=reject (DNS from
// memory) to local recipients, one recipient per sender so INBOX row locks
// do not serialise them. Each delivery is committed before its 250.
// Reports deliveries/s and per-message latency.
func BenchmarkMXInbound(b *testing.B) { benchMX(b, nil) }

// BenchmarkMXInboundRspamd is BenchmarkMXInbound with rspamd (Debian's
// package, on loopback) scanning every message at DATA. It also reports
// rspamd's own time for one of the messages, asked directly one at a time
// (scan-ms): the latency rspamd adds on an idle server.
func BenchmarkMXInboundRspamd(b *testing.B) {
	srv := rspamdtest.Start(b)
	c := rspamdClient(b, srv.URL, srv.ControllerURL, 10*time.Second)
	msg := benchMX(b, func(o *smtpd.MXOptions) { o.Rspamd = c })
	const n = 50
	env := rspamd.Envelope{IP: "127.0.0.1", Helo: "localhost", MailFrom: "bounce@sender.example", Rcpts: []string{"r0@example.org"}}
	start := time.Now()
	for range n {
		if _, err := c.Check(context.Background(), env, strings.NewReader(msg), int64(len(msg))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/n, "scan-ms")
}

// benchMX runs the MX benchmark with the MX options tuned by tune (if
// set) and returns one of the messages sent.
func benchMX(b *testing.B, tune func(*smtpd.MXOptions)) string {
	const senders = 20
	e := newMXEnv(b, func(_ *smtpd.Config, o *smtpd.MXOptions) {
		if tune != nil {
			tune(o)
		}
	})
	e.dns.set("sender.example", "v=spf1 ip4:127.0.0.1 -all")
	e.dns.set("_dmarc.sender.example", "v=DMARC1; p=reject")
	rcpts := make([]*store.Account, senders)
	clients := make([]*smtp.Client, senders)
	msgs := make([]string, senders)
	for i := range senders {
		rcpts[i], _ = e.account(b, fmt.Sprintf("r%d@example.org", i))
		clients[i] = e.dial(b, "", true)
		msgs[i] = e.dns.sign(b, "sender.example", crlf(fmt.Sprintf(
			"From: News <news@sender.example>\nTo: %s\nSubject: bench\nMessage-ID: <%d@sender.example>\n\n%s\n",
			rcpts[i].Address, i, "A line of a typical short newsletter body, repeated.\n")))
	}
	var next atomic.Int64
	lat := make([][]time.Duration, senders)
	errc := make(chan error, senders)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			to := []string{rcpts[i].Address}
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := send(clients[i], "bounce@sender.example", to, msgs[i]); err != nil {
					errc <- err
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errc)
	for err := range errc {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	return msgs[0]
}
