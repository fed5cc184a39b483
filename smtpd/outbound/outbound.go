// Package outbound is mailstack's delivery queue worker: it claims due rows
// of the PostgreSQL outbound queue (safely, with any number of processes
// running a worker), delivers them by SMTP to the recipient domain's MX
// hosts or to a smarthost relay, retries temporary failures with
// exponential backoff, and bounces permanent ones with a DSN to the
// sender's INBOX.
package outbound

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/mailaddr"
	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/store"
)

// Resolver is the DNS the worker uses; *net.Resolver implements it. Tests
// inject their own so they never touch real DNS.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Config configures a Worker. Store, Hostname and Resolver are required.
type Config struct {
	Store *store.Store
	// Hostname is the name sent in EHLO and used in bounces.
	Hostname string
	// Resolver looks up MX and address records; required (there is no
	// default, so that no test reaches the real DNS by forgetting it):
	// net.DefaultResolver in production.
	Resolver Resolver
	// Port is the SMTP port of MX hosts (default 25; tests use others).
	Port int
	// TLS is the client configuration for STARTTLS with MX hosts. The
	// default is opportunistic (RFC 7435): encrypt whenever offered, without
	// certificate checks, since most MX certificates do not verify and the
	// alternative is plain text. ServerName is set per host.
	TLS *tls.Config
	// Relay, if set, receives all outbound mail instead of MX hosts.
	Relay *Relay
	// Dial opens connections (default a net.Dialer with a 30 s timeout).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// RetryBase is the first retry delay, doubled per attempt up to
	// RetryMax (defaults 5 minutes and 4 hours); after MaxAge (default 5
	// days) a message is bounced.
	RetryBase, RetryMax, MaxAge time.Duration
	// Lease is how long a claimed row stays reserved for one attempt
	// (default 30 minutes). Every attempt ends before the lease runs out
	// (a sixth of it is kept as a margin), so another worker never claims a
	// row that is being delivered; rows of a claim that find no free slot
	// (Concurrency) within half the lease are released unattempted.
	Lease time.Duration
	// AttemptTimeout bounds one delivery attempt to one domain (default 20
	// minutes), counted from its start; the lease may end it earlier.
	AttemptTimeout time.Duration
	// PollInterval is the longest the worker sleeps without a wake-up
	// (default 1 minute): a fallback for lost notifications.
	PollInterval time.Duration
	// BatchSize is how many rows one claim takes (default 100);
	// Concurrency how many domains are delivered to at once (default 16).
	BatchSize, Concurrency int
	Log                    *slog.Logger
	// Metrics, if set, counts delivery results.
	Metrics *metrics.Mailstack
	// OnPass, if set, is called by Run after each pass, before it sleeps,
	// with the rows the pass claimed and the claimed groups still being
	// delivered or waiting for a slot. Tests learn from (0, 0) that the
	// worker holds nothing: with the queue empty it delivers no more.
	OnPass func(claimed, inHand int)
}

func (c Config) withDefaults() Config {
	c.Port = cmp.Or(c.Port, 25)
	if c.TLS == nil {
		c.TLS = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // opportunistic TLS, see Config.TLS
	}
	if c.Dial == nil {
		d := &net.Dialer{Timeout: 30 * time.Second}
		c.Dial = d.DialContext
	}
	c.RetryBase = cmp.Or(c.RetryBase, 5*time.Minute)
	c.RetryMax = cmp.Or(c.RetryMax, 4*time.Hour)
	c.MaxAge = cmp.Or(c.MaxAge, 5*24*time.Hour)
	c.AttemptTimeout = cmp.Or(c.AttemptTimeout, 20*time.Minute)
	c.Lease = cmp.Or(c.Lease, max(30*time.Minute, c.AttemptTimeout+time.Minute))
	c.PollInterval = cmp.Or(c.PollInterval, time.Minute)
	c.BatchSize = cmp.Or(c.BatchSize, 100)
	c.Concurrency = cmp.Or(c.Concurrency, 16)
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Worker delivers the outbound queue. Every mailstack process runs one.
type Worker struct {
	cfg Config
	// slots holds one element per delivery running now (at most
	// Concurrency), shared by all batches.
	slots chan struct{}
	// waiting counts claimed groups that wait for a slot; drained is
	// signalled when it falls to zero.
	waiting atomic.Int64
	drained chan struct{}
	// done is signalled when a group's outcome is recorded: Run then looks
	// again for the earliest due row.
	done chan struct{}
}

// New returns a worker. It panics if cfg.Resolver is nil.
func New(cfg Config) *Worker {
	if cfg.Resolver == nil {
		panic("outbound: Config.Resolver is required (net.DefaultResolver in production)")
	}
	cfg = cfg.withDefaults()
	return &Worker{cfg: cfg, slots: make(chan struct{}, cfg.Concurrency), drained: make(chan struct{}, 1), done: make(chan struct{}, 1)}
}

// Run delivers queued mail until ctx is done. It wakes when any process
// queues mail (NOTIFY), when the earliest deferred row falls due, and at
// least every PollInterval. It claims rows only when a delivery can start
// at once, and does not wait for the deliveries of one batch to end before
// claiming the next: a slow domain holds one slot, not the whole queue.
func (w *Worker) Run(ctx context.Context) {
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.cfg.Store.ListenQueue(ctx, wake)
	}()
	defer wg.Wait()
	for ctx.Err() == nil {
		// Bounces left by a crashed worker or by a deleted row are
		// found here, at least every PollInterval.
		w.sendBounces(ctx)
		if !w.claimSlot(ctx) {
			break
		}
		n, err := w.dispatch(ctx, &wg, true)
		if err != nil && ctx.Err() == nil {
			w.cfg.Log.Error("outbound queue", "err", err)
		}
		if n == w.cfg.BatchSize && err == nil {
			continue // more may be due right now
		}
		if w.cfg.OnPass != nil {
			w.cfg.OnPass(n, len(w.slots)+int(w.waiting.Load()))
		}
		sleep := w.cfg.PollInterval
		if next, ok, err := w.cfg.Store.NextQueueAttempt(ctx); err == nil && ok {
			sleep = min(sleep, max(time.Until(next), 10*time.Millisecond))
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
		case <-wake:
		case <-w.done:
		case <-t.C:
		}
		t.Stop()
	}
}

// claimSlot takes a delivery slot for the next claim, once no group of an
// earlier claim still waits for one (those go first: their leases run).
func (w *Worker) claimSlot(ctx context.Context) bool {
	for {
		select {
		case w.slots <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		if w.waiting.Load() == 0 {
			return true
		}
		<-w.slots // to a waiting group
		select {
		case <-w.drained:
		case <-ctx.Done():
			return false
		}
	}
}

// RunOnce claims one batch of due rows, delivers them, records the
// outcomes and sends the bounces that are due. It returns how many rows it
// claimed.
func (w *Worker) RunOnce(ctx context.Context) (int, error) {
	var wg sync.WaitGroup
	n, err := w.dispatch(ctx, &wg, false)
	wg.Wait()
	w.sendBounces(ctx)
	return n, err
}

// leaseMargin is the part of a lease no attempt may use: it covers
// recording the outcome and clock differences between processes.
func (w *Worker) leaseMargin() time.Duration { return w.cfg.Lease / 6 }

// dispatch claims one batch of due rows and starts delivering it, one group
// per recipient domain, each in a slot of its own; wg tracks the groups.
// held says the caller already holds a slot, which the first group takes
// over. Every attempt ends before the claim's lease runs out (less
// leaseMargin), so no other worker can claim and deliver the same rows
// meanwhile. A group that finds no free slot within half the lease is
// released undelivered, to be claimed again by whichever worker has room.
func (w *Worker) dispatch(ctx context.Context, wg *sync.WaitGroup, held bool) (int, error) {
	// The lease runs from the database's claim time, which is not earlier
	// than this.
	claimedAt := time.Now()
	rows, err := w.cfg.Store.ClaimQueued(ctx, w.cfg.BatchSize, w.cfg.Lease)
	if err != nil || len(rows) == 0 {
		if held {
			<-w.slots
		}
		return 0, err
	}
	leaseEnd := claimedAt.Add(w.cfg.Lease - w.leaseMargin())
	startBy := claimedAt.Add(w.cfg.Lease / 2)
	// Rows come sorted by recipient domain: one connection per domain (or
	// one to the relay per batch slice).
	var groups [][]store.QueuedMessage
	for i, r := range rows {
		if i == 0 || w.cfg.Relay == nil && domainOf(r.RcptTo) != domainOf(rows[i-1].RcptTo) {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], r)
	}
	for _, g := range groups {
		if !held {
			select {
			case w.slots <- struct{}{}:
				held = true
			default:
			}
		}
		wg.Add(1)
		if held {
			held = false
			go func() {
				defer wg.Done()
				w.deliverInSlot(ctx, g, leaseEnd)
			}()
			continue
		}
		w.waiting.Add(1)
		go func() {
			defer wg.Done()
			w.waitForSlot(ctx, g, startBy, leaseEnd)
		}()
	}
	return len(rows), nil
}

// waitForSlot starts delivering g once a slot is free, unless that is not
// before startBy or ctx ends first: then g is released unattempted.
func (w *Worker) waitForSlot(ctx context.Context, g []store.QueuedMessage, startBy, leaseEnd time.Time) {
	t := time.NewTimer(time.Until(startBy))
	defer t.Stop()
	got := false
	select {
	case w.slots <- struct{}{}:
		got = true
		if time.Now().After(startBy) {
			<-w.slots
			got = false
		}
	case <-t.C:
	case <-ctx.Done():
	}
	if w.waiting.Add(-1) == 0 {
		select {
		case w.drained <- struct{}{}:
		default:
		}
	}
	if got {
		w.deliverInSlot(ctx, g, leaseEnd)
		return
	}
	w.release(g)
}

// deliverInSlot delivers g in a slot the caller took, records the results
// and frees the slot. The attempt ends after AttemptTimeout or at
// leaseEnd, whichever comes first.
func (w *Worker) deliverInSlot(ctx context.Context, g []store.QueuedMessage, leaseEnd time.Time) {
	// The slot is free before Run is woken, so Run's pass counts it free.
	defer w.signalDone()
	defer func() { <-w.slots }()
	deadline := time.Now().Add(w.cfg.AttemptTimeout)
	if leaseEnd.Before(deadline) {
		deadline = leaseEnd
	}
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	results := w.deliverGroup(actx, g)
	w.record(context.WithoutCancel(ctx), g, results)
	// This group may have been the last of a message being tried.
	w.sendBounces(ctx)
}

func (w *Worker) signalDone() {
	select {
	case w.done <- struct{}{}:
	default:
	}
}

// release gives rows back unattempted: they are due again at once (for
// any worker with a free slot), with their attempt count restored.
func (w *Worker) release(rows []store.QueuedMessage) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	byLease := map[string][]int64{}
	for _, r := range rows {
		w.cfg.Log.Info("not attempted: no free delivery slot in time", "queue_id", r.ID, "to", r.RcptTo)
		byLease[r.Lease] = append(byLease[r.Lease], r.ID)
	}
	for lease, ids := range byLease {
		if err := w.cfg.Store.QueueRelease(ctx, ids, lease); err != nil {
			w.cfg.Log.Error("outbound: release", "err", err, "queue_ids", ids)
		}
	}
	w.signalDone()
}

// result is the outcome of one row's attempt: err nil means delivered.
type result struct {
	err    error
	remote string // the host that answered, for DSNs
}

// permanent reports whether err is final: a 5xx reply or a permError.
// Connection-stage errors are never final (another MX or a later try may
// work).
func permanent(err error) bool {
	var ce *connError
	if errors.As(err, &ce) {
		return false
	}
	var pe *permError
	if errors.As(err, &pe) {
		return true
	}
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code/100 == 5
}

// connError wraps failures to reach any server for a domain.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

// permError marks a failure no retry can fix (no such domain, null MX).
type permError struct {
	msg    string
	status string // enhanced status code for the DSN
}

func (e *permError) Error() string { return e.msg }

// record applies results in one store call: delivered rows are removed,
// temporary failures deferred (with exponential backoff, the last attempt
// at CreatedAt+MaxAge), and permanent or expired ones marked failed, to be
// reported in their message's one DSN (see sendBounces).
func (w *Worker) record(ctx context.Context, rows []store.QueuedMessage, results []result) {
	outcomes := make([]store.QueueOutcome, len(rows))
	now := time.Now()
	for i, r := range rows {
		res := results[i]
		o := &outcomes[i]
		o.ID = r.ID
		log := w.cfg.Log.With("queue_id", r.ID, "from", r.MailFrom, "to", r.RcptTo, "attempt", r.Attempts)
		if res.err == nil {
			log.Info("delivered", "mx_host", res.remote) // remote is a client's address in session logs
			w.cfg.Metrics.MessageOut("delivered")
			o.Kind = store.OutcomeDelivered
			continue
		}
		o.Error = res.err.Error()
		deadline := r.CreatedAt.Add(w.cfg.MaxAge)
		expired := !permanent(res.err) && !now.Before(deadline)
		if !permanent(res.err) && !expired {
			// Never later than the deadline: the last try is at it.
			next := now.Add(w.backoff(r.Attempts))
			if next.After(deadline) {
				next = deadline
			}
			log.Info("deferred", "err", res.err, "next", next)
			w.cfg.Metrics.MessageOut("deferred")
			o.Kind, o.Next = store.OutcomeDeferred, next
			continue
		}
		log.Warn("bounced", "err", res.err, "expired", expired)
		w.cfg.Metrics.MessageOut("bounced")
		o.Kind, o.RemoteMTA = store.OutcomeFailed, res.remote
		o.DSNStatus, o.DSNDiagnostic = dsnStatus(res.err, expired)
		if expired {
			o.Error = fmt.Sprintf("gave up after %s of retrying; last error: %s", age(w.cfg.MaxAge), o.Error)
		}
	}
	if len(rows) == 0 {
		return
	}
	if err := w.cfg.Store.QueueRecord(ctx, rows[0].Lease, outcomes); err != nil {
		w.cfg.Log.Error("outbound: record outcomes", "err", err, "rows", len(rows))
	}
}

// bounceLease is how long the failed rows of a message stay reserved for
// the worker writing its DSN (local work only).
const bounceLease = 5 * time.Minute

// sendBounces delivers one DSN for every message that has failed
// recipients and none in the middle of an attempt: the failures of one
// delivery pass (several domains, say) are listed in one DSN (RFC 3464),
// and a recipient still being retried does not delay it. As in Postfix,
// one that fails later is reported in a DSN of its own; every failed
// recipient is reported exactly once.
func (w *Worker) sendBounces(ctx context.Context) {
	for ctx.Err() == nil {
		rows, err := w.cfg.Store.ClaimBounces(ctx, w.cfg.BatchSize, bounceLease)
		if err != nil {
			if ctx.Err() == nil {
				w.cfg.Log.Error("outbound: claim bounces", "err", err)
			}
			return
		}
		for i := 0; i < len(rows); {
			j := i + 1
			for j < len(rows) && rows[j].MessageID == rows[i].MessageID && rows[j].MailFrom == rows[i].MailFrom &&
				rows[j].AccountID == rows[i].AccountID {
				j++
			}
			w.bounce(ctx, rows[i:j])
			i = j
		}
		if len(rows) < w.cfg.BatchSize {
			return
		}
	}
}

// bounce sends the DSN for fs, the failed rows of one message (none when
// the sender's account is gone or the message had the null sender), and
// removes them.
func (w *Worker) bounce(ctx context.Context, fs []store.QueuedMessage) {
	ids := make([]int64, len(fs))
	for i, f := range fs {
		ids[i] = f.ID
	}
	var dsn *store.Spooled
	if fs[0].MailFrom != "" && fs[0].AccountID != 0 {
		var err error
		if dsn, err = w.buildDSN(ctx, fs); err != nil {
			w.cfg.Log.Error("outbound: build bounce", "err", err, "queue_ids", ids)
			return // the lease runs out and the rows are bounced again
		}
		defer dsn.Close()
	}
	if err := w.cfg.Store.QueueBounce(ctx, ids, fs[0].Lease, fs[0].AccountID, dsn); err != nil {
		w.cfg.Log.Error("outbound: record bounce", "err", err, "queue_ids", ids)
		return
	}
	w.cfg.Log.Info("bounce sent", "from", fs[0].MailFrom, "recipients", len(fs), "queue_ids", ids)
}

// backoff is the delay after the given number of attempts: RetryBase
// doubled per earlier attempt, capped at RetryMax.
func (w *Worker) backoff(attempts int) time.Duration {
	d := w.cfg.RetryBase
	for i := 1; i < attempts && d < w.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, w.cfg.RetryMax)
}

// age says how long d is for people: "5 days", "36h0m0s".
func age(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == day:
		return "1 day"
	case d > day && d%day == 0:
		return fmt.Sprintf("%d days", d/day)
	}
	return d.String()
}

func domainOf(addr string) string { return mailaddr.DomainOf(addr) }
