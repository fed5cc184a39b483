package smtpd_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

func waitLong(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// More domains than delivery slots and slow MX hosts: the groups that wait
// for a slot must not be delivered after the lease of their claim ran out,
// when a second worker claims and delivers the same rows.
func TestOutboundLeaseSlowGroups(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := newFakeMX(t, e.serverTLS)
	mx.rcptDelay = func(string) time.Duration { return time.Second }
	mx.onData = leaseChecker(t, e.st)
	var domains, rcpts []string
	for i := range 6 {
		d := fmt.Sprintf("d%d.test", i)
		domains = append(domains, d)
		rcpts = append(rcpts, "x@"+d)
	}
	for range 2 {
		st, err := store.Open(context.Background(), e.url, store.Options{MaxConns: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		startWorker(t, st, mx, func(c *outbound.Config) {
			c.Resolver = remoteResolver(domains...)
			c.Concurrency = 1
			c.Lease = 3 * time.Second
		})
	}
	c := e.login(t, true, "alice@example.org", e.alicePass)
	if err := send(c, "alice@example.org", rcpts, crlf("From: alice@example.org\nMessage-ID: <lease@example.org>\nSubject: s\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	total := func() int {
		mx.mu.Lock()
		defer mx.mu.Unlock()
		n := 0
		for _, c := range mx.perRcpt {
			n += c
		}
		return n
	}
	waitLong(t, "all deliveries", 30*time.Second, func() bool { return total() >= len(rcpts) && e.queueLen(t) == 0 })
	time.Sleep(500 * time.Millisecond)
	mx.mu.Lock()
	defer mx.mu.Unlock()
	for k, n := range mx.perRcpt {
		if n != 1 {
			t.Errorf("%s delivered %d times", k, n)
		}
	}
	if len(mx.perRcpt) != len(rcpts) {
		t.Errorf("%d recipients got the message, want %d", len(mx.perRcpt), len(rcpts))
	}
}

// An MX that stalls longer than the lease: the attempt is cut off before
// the lease ends, even with a longer AttemptTimeout, and nothing is
// delivered outside a lease.
func TestOutboundAttemptEndsBeforeLease(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := newFakeMX(t, e.serverTLS)
	const lease = 2 * time.Second
	var firstRcpt atomic.Int64 // unix nanoseconds
	mx.rcptDelay = func(string) time.Duration {
		firstRcpt.CompareAndSwap(0, time.Now().UnixNano())
		return 10 * time.Second
	}
	mx.onData = leaseChecker(t, e.st)
	startWorker(t, e.st, mx, func(c *outbound.Config) {
		c.Lease = lease
		c.AttemptTimeout = time.Hour
		c.RetryBase, c.RetryMax = time.Hour, time.Hour // one attempt is enough to watch
	})
	c := e.login(t, true, "alice@example.org", e.alicePass)
	if err := send(c, "alice@example.org", []string{"carol@remote.test"}, crlf("From: alice@example.org\nSubject: s\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	var ended time.Time
	waitLong(t, "the attempt to end", 15*time.Second, func() bool {
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
	if n := len(mx.deliveries()); n != 0 {
		t.Errorf("%d deliveries, want none", n)
	}
}

// A domain whose MX is slow must not hold up mail for other domains queued
// meanwhile.
func TestOutboundSlowDomainDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t, 1<<20)
	mx := newFakeMX(t, e.serverTLS)
	slowStarted := make(chan struct{})
	var once sync.Once
	mx.rcptDelay = func(to string) time.Duration {
		if strings.HasSuffix(to, "@slow.test") {
			once.Do(func() { close(slowStarted) })
			return 4 * time.Second
		}
		return 0
	}
	startWorker(t, e.st, mx, func(c *outbound.Config) {
		c.Resolver = remoteResolver("slow.test", "fast.test")
		c.Lease = time.Minute
	})
	c := e.login(t, true, "alice@example.org", e.alicePass)
	if err := send(c, "alice@example.org", []string{"x@slow.test"}, crlf("From: alice@example.org\nSubject: slow\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-slowStarted:
	case <-time.After(10 * time.Second):
		t.Fatal("slow delivery never started")
	}
	if err := send(c, "alice@example.org", []string{"y@fast.test"}, crlf("From: alice@example.org\nSubject: fast\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	waitLong(t, "fast delivery", 10*time.Second, func() bool { return len(mx.deliveries()) > 0 })
	if d := mx.deliveries(); len(d) != 1 || d[0].to[0] != "y@fast.test" {
		t.Fatalf("first delivery %+v, want the fast one while the slow MX still stalls", d[0].to)
	}
	waitLong(t, "slow delivery", 15*time.Second, func() bool { return len(mx.deliveries()) == 2 && e.queueLen(t) == 0 })
}
