package outbound_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd/outbound"
	"github.com/mailstack/mailstack/store"
)

// leaseChecker fails a test when the fake MX receives a message for a
// recipient whose queue row is no longer leased: the attempt outlived its
// lease, and another worker may deliver the same row.
func leaseChecker(t *testing.T, st *store.Store) func(to []string) {
	return func(to []string) {
		q, err := st.QueueEntries(context.Background())
		if err != nil {
			t.Error(err)
			return
		}
		now := time.Now()
		for _, rcpt := range to {
			found := false
			for _, r := range q {
				if r.RcptTo == rcpt {
					found = true
					if r.Lease == "" || !r.NextAttempt.After(now) {
						t.Errorf("%s delivered after its lease ended (%v ago)", rcpt, now.Sub(r.NextAttempt))
					}
				}
			}
			if !found {
				t.Errorf("%s delivered, but its queue row is gone (delivered before)", rcpt)
			}
		}
	}
}

// More domains than delivery slots and slow MX hosts: the groups that wait
// for a slot must not be delivered after the lease of their claim ran out,
// when a second worker claims and delivers the same rows.
func TestOutboundLeaseSlowGroups(t *testing.T) {
	e := newEnv(t)
	mx := smtptest.NewMX(t, e.serverTLS)
	mx.RcptDelay = func(string) time.Duration { return time.Second }
	mx.OnData = leaseChecker(t, e.st)
	var domains, rcpts []string
	for i := range 6 {
		d := fmt.Sprintf("d%d.test", i)
		domains = append(domains, d)
		rcpts = append(rcpts, "x@"+d)
	}
	workers := e.processes(t, 2, mx, func(c *outbound.Config) {
		c.Resolver = smtptest.RemoteResolver(domains...)
		c.Concurrency = 1
		c.Lease = 3 * time.Second
	})
	e.submit(t, "alice@example.org", rcpts, crlf("From: alice@example.org\nMessage-ID: <lease@example.org>\nSubject: s\n\nbody\n"))
	// Once the queue is empty and neither worker holds a row, no late
	// delivery can come.
	smtptest.WaitLong(t, "all deliveries", 30*time.Second, func() bool {
		return mx.Total() >= len(rcpts) && e.queueLen(t) == 0 && idle(workers...)
	})
	perRcpt := mx.PerRecipient()
	for k, n := range perRcpt {
		if n != 1 {
			t.Errorf("%s delivered %d times", k, n)
		}
	}
	if len(perRcpt) != len(rcpts) {
		t.Errorf("%d recipients got the message, want %d", len(perRcpt), len(rcpts))
	}
}

// An MX that stalls longer than the lease: the attempt is cut off before
// the lease ends, even with a longer AttemptTimeout, and nothing is
// delivered outside a lease.
func TestOutboundAttemptEndsBeforeLease(t *testing.T) {
	e := newEnv(t)
	mx := smtptest.NewMX(t, e.serverTLS)
	const lease = 2 * time.Second
	var firstRcpt atomic.Int64 // unix nanoseconds
	mx.RcptDelay = func(string) time.Duration {
		firstRcpt.CompareAndSwap(0, time.Now().UnixNano())
		return 10 * time.Second
	}
	mx.OnData = leaseChecker(t, e.st)
	smtptest.StartWorker(t, e.st, mx, func(c *outbound.Config) {
		c.Lease = lease
		c.AttemptTimeout = time.Hour
		c.RetryBase, c.RetryMax = time.Hour, time.Hour // one attempt is enough to watch
	})
	e.submit(t, "alice@example.org", []string{"carol@remote.test"}, crlf("From: alice@example.org\nSubject: s\n\nbody\n"))
	var ended time.Time
	smtptest.WaitLong(t, "the attempt to end", 15*time.Second, func() bool {
		q, err := e.st.QueueEntries(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(q) == 1 && q[0].Lease == "" && q[0].LastError != "" {
			ended = time.Now()
			return true
		}
		return false
	})
	start := time.Unix(0, firstRcpt.Load())
	if d := ended.Sub(start); d >= lease {
		t.Errorf("the attempt ran %v after RCPT, at least its whole lease (%v)", d, lease)
	}
	if n := len(mx.Deliveries()); n != 0 {
		t.Errorf("%d deliveries, want none", n)
	}
}

// A domain whose MX is slow must not hold up mail for other domains queued
// meanwhile.
func TestOutboundSlowDomainDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t)
	mx := smtptest.NewMX(t, e.serverTLS)
	slowStarted := make(chan struct{})
	var once sync.Once
	mx.RcptDelay = func(to string) time.Duration {
		if strings.HasSuffix(to, "@slow.test") {
			once.Do(func() { close(slowStarted) })
			return 4 * time.Second
		}
		return 0
	}
	smtptest.StartWorker(t, e.st, mx, func(c *outbound.Config) {
		c.Resolver = smtptest.RemoteResolver("slow.test", "fast.test")
		c.Lease = time.Minute
	})
	e.submit(t, "alice@example.org", []string{"x@slow.test"}, crlf("From: alice@example.org\nSubject: slow\n\nbody\n"))
	select {
	case <-slowStarted:
	case <-time.After(10 * time.Second):
		t.Fatal("slow delivery never started")
	}
	e.submit(t, "alice@example.org", []string{"y@fast.test"}, crlf("From: alice@example.org\nSubject: fast\n\nbody\n"))
	smtptest.WaitLong(t, "fast delivery", 10*time.Second, func() bool { return len(mx.Deliveries()) > 0 })
	if d := mx.Deliveries(); len(d) != 1 || d[0].To[0] != "y@fast.test" {
		t.Fatalf("first delivery %+v, want the fast one while the slow MX still stalls", d[0].To)
	}
	smtptest.WaitLong(t, "slow delivery", 15*time.Second, func() bool { return len(mx.Deliveries()) == 2 && e.queueLen(t) == 0 })
}
