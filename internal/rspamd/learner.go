package rspamd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mailstack/mailstack/internal/metrics"
	"github.com/mailstack/mailstack/store"
)

// LearnerConfig configures a Learner. Store and Client are required.
type LearnerConfig struct {
	Store  *store.Store
	Client *Client
	// Lease is how long a claimed row stays reserved for one attempt
	// (default 5 minutes: longer than Client's learning timeout).
	Lease time.Duration
	// RetryBase is the first retry delay after rspamd failed, doubled per
	// attempt up to RetryMax (defaults 1 minute and 1 hour); a row still
	// not learned after MaxAge (default 3 days) is given up on.
	RetryBase, RetryMax, MaxAge time.Duration
	// PollInterval is the longest the learner sleeps without a wake-up
	// (default 1 minute): a fallback for lost notifications.
	PollInterval time.Duration
	// BatchSize is how many rows one claim takes (default 50);
	// Concurrency how many are sent to rspamd at once (default 4).
	BatchSize, Concurrency int
	Log                    *slog.Logger
	// Metrics, if set, counts learning results.
	Metrics *metrics.Mailstack
}

// Learner drains the store's junk_learn queue into rspamd's controller:
// every message a user moved into Junk is learned as spam for that user,
// every one moved out as ham. Every mailstack process with rspamd
// configured runs one; rows are claimed with leases, so any number may run.
type Learner struct {
	cfg LearnerConfig
}

// NewLearner returns a learner. It panics if Store or Client is nil.
func NewLearner(cfg LearnerConfig) *Learner {
	if cfg.Store == nil || cfg.Client == nil {
		panic("rspamd: LearnerConfig needs Store and Client")
	}
	cfg.Lease = cmp.Or(cfg.Lease, max(5*time.Minute, 5*cfg.Client.cfg.Timeout))
	cfg.RetryBase = cmp.Or(cfg.RetryBase, time.Minute)
	cfg.RetryMax = cmp.Or(cfg.RetryMax, time.Hour)
	cfg.MaxAge = cmp.Or(cfg.MaxAge, 3*24*time.Hour)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, time.Minute)
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 50)
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 4)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Learner{cfg: cfg}
}

// Run learns queued messages until ctx is done. It wakes when any process
// queues some (NOTIFY), when the earliest deferred row falls due, and at
// least every PollInterval.
func (l *Learner) Run(ctx context.Context) {
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() { l.cfg.Store.ListenLearn(ctx, wake) })
	defer wg.Wait()
	for ctx.Err() == nil {
		n, err := l.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			l.cfg.Log.Error("junk learning", "err", err)
		}
		if n == l.cfg.BatchSize && err == nil {
			continue // more may be due right now
		}
		sleep := l.cfg.PollInterval
		if next, ok, err := l.cfg.Store.NextLearnAttempt(ctx); err == nil && ok {
			sleep = min(sleep, max(time.Until(next), 10*time.Millisecond))
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// RunOnce claims one batch of due rows, sends each to rspamd and records
// the outcomes. It returns how many rows it claimed.
func (l *Learner) RunOnce(ctx context.Context) (int, error) {
	jobs, err := l.cfg.Store.ClaimLearn(ctx, l.cfg.BatchSize, l.cfg.Lease)
	if err != nil || len(jobs) == 0 {
		return 0, err
	}
	outcomes := make([]store.LearnOutcome, len(jobs))
	sem := make(chan struct{}, l.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range jobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			outcomes[i] = l.learn(ctx, &jobs[i])
		})
	}
	wg.Wait()
	// Recorded even when ctx ended meanwhile: what rspamd learned is
	// learned, and a failure is only deferred.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := l.cfg.Store.RecordLearn(rctx, jobs[0].Lease, outcomes); err != nil {
		return len(jobs), err
	}
	return len(jobs), nil
}

// learn makes one attempt at a job.
func (l *Learner) learn(ctx context.Context, j *store.LearnJob) store.LearnOutcome {
	log := l.cfg.Log.With("account", j.Address, "message", j.MessageID, "spam", j.Spam, "attempt", j.Attempts)
	out := store.LearnOutcome{AccountID: j.AccountID, MessageID: j.MessageID, Done: true}
	err := l.cfg.Client.Learn(ctx, j.Spam, j.Address, l.cfg.Store.LearnBody(ctx, j), j.Size)
	switch {
	case err == nil:
		l.cfg.Metrics.JunkLearn(j.Spam, "ok")
		log.Info("junk learned")
		return out
	case errors.Is(err, ErrRefused):
		l.cfg.Metrics.JunkLearn(j.Spam, "failed")
		log.Warn("junk learning refused", "err", err)
		out.Error = err.Error()
		return out
	case time.Since(j.Queued) > l.cfg.MaxAge:
		l.cfg.Metrics.JunkLearn(j.Spam, "failed")
		log.Warn("junk learning given up", "err", err)
		out.Error = fmt.Sprintf("gave up after %d attempts: %v", j.Attempts, err)
		return out
	}
	l.cfg.Metrics.JunkLearn(j.Spam, "retry")
	delay := l.cfg.RetryBase << min(j.Attempts-1, 20)
	delay = min(delay, l.cfg.RetryMax)
	log.Warn("junk learning deferred", "err", err, "retry_in", delay)
	out.Done, out.Next, out.Error = false, time.Now().Add(delay), err.Error()
	return out
}
