package store

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
)

// learnDirection says what copying from a mailbox with special use src to
// one with dst teaches (when learn is set): into \Junk, spam; out of it,
// ham, unless into \Trash (deleting junk says nothing about it, as in
// rspamd's Dovecot setup).
func learnDirection(src, dst string, learn bool) (spam, ok bool) {
	switch {
	case !learn || src == dst:
		return false, false
	case dst == `\Junk`:
		return true, true
	case src == `\Junk` && dst != `\Trash`:
		return false, true
	}
	return false, false
}

// queueLearnTx records that the user said the account's messages (content
// ids) are spam (or ham), and wakes the learners. A message rspamd already
// learned as that class for the account is not queued again; a pending one
// of the other class now waits to be learned as this one.
func queueLearnTx(ctx context.Context, tx pgx.Tx, accountID int64, messageIDs []int64, spam bool) error {
	if len(messageIDs) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `WITH ins AS (
			INSERT INTO junk_learn (account_id, message_id, spam)
			SELECT DISTINCT $1::bigint, m, $3::boolean FROM unnest($2::bigint[]) m ORDER BY m -- one lock order
			ON CONFLICT (account_id, message_id) DO UPDATE SET spam = EXCLUDED.spam,
				queued_at = now(), next_attempt = now(), attempts = 0, lease = NULL, last_error = '',
				done_at = CASE WHEN junk_learn.learned = EXCLUDED.spam THEN now() END
			WHERE junk_learn.spam <> EXCLUDED.spam
			RETURNING done_at IS NULL AS pending
		)
		SELECT pg_notify($4, '') WHERE EXISTS (SELECT 1 FROM ins WHERE pending)`, accountID, messageIDs, spam, LearnChannel)
	if err != nil {
		return fmt.Errorf("queue junk learning: %w", err)
	}
	return nil
}

// LearnJob is a claimed junk_learn row: one message to teach rspamd as
// spam or ham for one account.
type LearnJob struct {
	AccountID int64
	Address   string // the account's address: rspamd's per-user statistics key
	MessageID int64
	Size      int64
	Spam      bool
	Attempts  int // this one included
	Queued    time.Time
	Lease     string
}

// ClaimLearn takes up to limit pending junk_learn rows, skipping rows other
// workers hold, and leases them for the given time (after which they are
// due again: the holder crashed). Rows come in the order they were queued.
func (s *Store) ClaimLearn(ctx context.Context, limit int, lease time.Duration) ([]LearnJob, error) {
	token, err := newLeaseToken()
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `WITH due AS (
			SELECT account_id, message_id FROM junk_learn WHERE done_at IS NULL AND next_attempt <= now()
			ORDER BY next_attempt LIMIT $1 FOR UPDATE SKIP LOCKED
		), claimed AS (
			UPDATE junk_learn j SET next_attempt = now() + $2::interval, lease = $3, attempts = attempts + 1
			FROM due WHERE j.account_id = due.account_id AND j.message_id = due.message_id
			RETURNING j.account_id, j.message_id, j.spam, j.attempts, j.queued_at
		)
		SELECT c.account_id, a.address, c.message_id, m.size, c.spam, c.attempts, c.queued_at, $3
		FROM claimed c JOIN accounts a ON a.id = c.account_id JOIN messages m ON m.id = c.message_id
		ORDER BY c.queued_at`, limit, lease, token)
	if err != nil {
		return nil, fmt.Errorf("claim junk learning: %w", err)
	}
	jobs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[LearnJob])
	if err != nil {
		return nil, fmt.Errorf("claim junk learning: %w", err)
	}
	return jobs, nil
}

// LearnBody returns a reader of a claimed job's message. (The job's row,
// written for its account by a MOVE or COPY of that account's message,
// is what scopes the content id to the account.)
func (s *Store) LearnBody(ctx context.Context, j *LearnJob) io.Reader {
	return &bodyReader{ctx: ctx, s: s, id: j.MessageID, end: j.Size}
}

// LearnOutcome is the result of one attempt at a claimed job.
type LearnOutcome struct {
	AccountID, MessageID int64
	// Done: learned (Error empty) or given up on (Error says why); else
	// due again at Next.
	Done  bool
	Next  time.Time
	Error string
}

// RecordLearn applies the outcomes of attempts at jobs claimed under
// lease, in one statement. Rows no longer held under lease (the lease ran
// out, or the user moved the message again meanwhile) are left alone and
// the error wraps ErrLeaseLost; the others are recorded all the same.
func (s *Store) RecordLearn(ctx context.Context, lease string, outcomes []LearnOutcome) error {
	n := len(outcomes)
	accounts, msgs, done, next, errs := make([]int64, n), make([]int64, n), make([]bool, n), make([]time.Time, n), make([]string, n)
	for i, o := range outcomes {
		accounts[i], msgs[i], done[i], next[i], errs[i] = o.AccountID, o.MessageID, o.Done, o.Next, o.Error
	}
	tag, err := s.pool.Exec(ctx, `UPDATE junk_learn j SET lease = NULL, last_error = o.err,
			done_at = CASE WHEN o.done THEN now() END,
			learned = CASE WHEN o.done AND o.err = '' THEN j.spam ELSE j.learned END,
			next_attempt = CASE WHEN o.done THEN j.next_attempt ELSE o.next END
		FROM unnest($2::bigint[], $3::bigint[], $4::boolean[], $5::timestamptz[], $6::text[]) o(account_id, message_id, done, next, err)
		WHERE j.account_id = o.account_id AND j.message_id = o.message_id AND j.lease = $1`,
		lease, accounts, msgs, done, next, errs)
	if err != nil {
		return fmt.Errorf("record junk learning: %w", err)
	}
	if int(tag.RowsAffected()) < n {
		return fmt.Errorf("record junk learning: %d of %d rows: %w", n-int(tag.RowsAffected()), n, ErrLeaseLost)
	}
	return nil
}

// NextLearnAttempt returns when the earliest pending junk_learn row is
// due; ok is false when none is pending.
func (s *Store) NextLearnAttempt(ctx context.Context) (next time.Time, ok bool, err error) {
	var t *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT min(next_attempt) FROM junk_learn WHERE done_at IS NULL`).Scan(&t); err != nil {
		return time.Time{}, false, fmt.Errorf("next junk learning: %w", err)
	}
	if t == nil {
		return time.Time{}, false, nil
	}
	return *t, true, nil
}

// LearnBacklog returns how many junk_learn rows wait (all processes), for
// the metrics endpoint.
func (s *Store) LearnBacklog(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM junk_learn WHERE done_at IS NULL`).Scan(&n); err != nil {
		return 0, fmt.Errorf("junk learning backlog: %w", err)
	}
	return n, nil
}

// LearnState is a junk_learn row as tests and the CLI see it.
type LearnState struct {
	MessageID int64
	Spam      bool  // the class the user said
	Learned   *bool // the class rspamd learned; nil: none yet
	Done      bool
	Attempts  int
	LastError string
}

// LearnStates returns the account's junk_learn rows, oldest first.
func (s *Store) LearnStates(ctx context.Context, accountID int64) ([]LearnState, error) {
	rows, err := s.pool.Query(ctx, `SELECT message_id, spam, learned, done_at IS NOT NULL, attempts, last_error
		FROM junk_learn WHERE account_id = $1 ORDER BY queued_at, message_id`, accountID)
	if err != nil {
		return nil, fmt.Errorf("junk learning: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[LearnState])
	if err != nil {
		return nil, fmt.Errorf("junk learning: %w", err)
	}
	return list, nil
}

// ListenLearn blocks until ctx ends, sending on wake (without blocking)
// whenever any process queues junk learning, as ListenQueue does for the
// outbound queue.
func (s *Store) ListenLearn(ctx context.Context, wake chan<- struct{}) {
	s.listenWake(ctx, LearnChannel, wake)
}
