package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrLeaseLost is returned when a queue row is no longer held by the
// caller's claim: its lease ran out and another worker took it, or an
// administrator deleted it.
var ErrLeaseLost = errors.New("queue entry no longer held by this worker")

// Outbound is one remote recipient of a submitted message.
type Outbound struct {
	AccountID int64 // the sender's account, which receives bounces
	MailFrom  string
	RcptTo    string
}

// QueuedMessage is one row of the outbound queue: a message for one remote
// recipient.
type QueuedMessage struct {
	ID            int64
	AccountID     int64 // 0 if the sender's account was deleted
	MessageID     int64 // content id
	MailFrom      string
	RcptTo        string
	Size          int64
	CreatedAt     time.Time
	NextAttempt   time.Time
	Attempts      int
	LastError     string
	LastAttemptAt *time.Time
	// Lease is the token of the claim that returned this row; empty in
	// listings of rows nobody is delivering.
	Lease string
	// FailedAt is set once the recipient was given up on: the row then
	// waits until no recipient of its message is being tried, and goes
	// into a delivery status notification (DSN) with the other failures
	// of that pass, with the fields below (RFC 3464 Status,
	// Diagnostic-Code, Remote-MTA).
	FailedAt                            *time.Time
	DSNStatus, DSNDiagnostic, RemoteMTA string
}

// Submit stores a submitted message once, adds it to the local target
// mailboxes and queues it for the remote recipients, all in one
// transaction, so that an acknowledged message is both delivered and queued
// or neither (ARCHITECTURE.md invariant 3). If login is not nil (a submission
// session's), the transaction first checks it as CheckSession does: a
// login no longer valid stores and queues nothing (ErrAccountGone), and
// the check costs no round trip of its own.
func (s *Store) Submit(ctx context.Context, login *Login, msg *Spooled, targets []Target, remote []Outbound) ([]AppendResult, error) {
	if msg.Size <= ChunkSize && len(targets)+len(remote) > 0 {
		results, fallback, err := s.storeInOneTrip(ctx, login, msg, targets, remote)
		if !fallback {
			if err != nil {
				return nil, fmt.Errorf("submit: %w", err)
			}
			return results, nil
		}
	}
	var results []AppendResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if login != nil {
			if err := checkSession(ctx, tx, login); err != nil {
				return err
			}
		}
		if len(targets) > 0 {
			var err error
			if results, err = s.DeliverTx(ctx, tx, msg, targets); err != nil {
				return err
			}
		}
		if len(remote) == 0 {
			return nil
		}
		return enqueueTx(ctx, tx, msg, remote)
	})
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	return results, nil
}

// enqueueTx queues msg for the remote recipients and wakes the workers when
// the transaction commits.
func enqueueTx(ctx context.Context, tx pgx.Tx, msg *Spooled, remote []Outbound) error {
	// insertMessageTx finds the content DeliverTx may just have stored.
	msgID, err := insertMessageTx(ctx, tx, msg)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, enqueueSQL("$1"), enqueueArgs(msgID, remote)...); err != nil {
		return fmt.Errorf("queue message: %w", err)
	}
	return nil
}

// enqueueSQL queues a message ($1 its content id or, where msgID looks the
// id up, its SHA-256) for remote recipients and wakes the queue workers
// when the transaction commits. A NULL id (content gone) fails the
// statement.
func enqueueSQL(msgID string) string {
	return `WITH q AS (
			INSERT INTO outbound_queue (account_id, message_id, mail_from, rcpt_to)
			SELECT nullif(a, 0), ` + msgID + `, f, r FROM unnest($2::bigint[], $3::text[], $4::text[]) AS q(a, f, r)
		)
		SELECT pg_notify($5, '')`
}

func enqueueArgs(msgID any, remote []Outbound) []any {
	accounts := make([]int64, len(remote))
	froms := make([]string, len(remote))
	rcpts := make([]string, len(remote))
	for i, o := range remote {
		accounts[i], froms[i], rcpts[i] = o.AccountID, o.MailFrom, o.RcptTo
	}
	return []any{msgID, accounts, froms, rcpts, QueueChannel}
}

func notifyQueue(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, QueueChannel)
	return err
}

const queueColumns = `q.id, coalesce(q.account_id, 0), q.message_id, q.mail_from, q.rcpt_to, m.size, q.created_at,
	q.next_attempt, q.attempts, q.last_error, q.last_attempt_at, coalesce(q.lease, ''),
	q.failed_at, q.dsn_status, q.dsn_diagnostic, q.remote_mta`

func scanQueued(rows pgx.Rows) ([]QueuedMessage, error) {
	return pgx.CollectRows(rows, pgx.RowToStructByPos[QueuedMessage])
}

// ClaimQueued takes up to limit due queue rows for delivery, skipping rows
// other workers hold, and leases them for the given time: until then no
// other worker claims them, and after it (the holder crashed) they are due
// again. Every returned row carries the claim's lease token. Rows come
// ordered by recipient domain and message, so callers can batch them.
func (s *Store) ClaimQueued(ctx context.Context, limit int, lease time.Duration) ([]QueuedMessage, error) {
	token, err := newLeaseToken()
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `WITH due AS (
			SELECT id FROM outbound_queue WHERE next_attempt <= now() AND failed_at IS NULL
			ORDER BY next_attempt LIMIT $1 FOR UPDATE SKIP LOCKED
		), claimed AS (
			UPDATE outbound_queue q SET next_attempt = now() + $2::interval, lease = $3,
				attempts = attempts + 1, last_attempt_at = now()
			FROM due WHERE q.id = due.id
			RETURNING q.*
		)
		SELECT `+queueColumns+` FROM claimed q JOIN messages m ON m.id = q.message_id
		ORDER BY lower(split_part(q.rcpt_to, '@', 2)), q.message_id, q.mail_from, q.id`,
		limit, lease, token)
	if err != nil {
		return nil, fmt.Errorf("claim queue: %w", err)
	}
	list, err := scanQueued(rows)
	if err != nil {
		return nil, fmt.Errorf("claim queue: %w", err)
	}
	return list, nil
}

func newLeaseToken() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("lease token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Outcome kinds of QueueRecord.
const (
	OutcomeDelivered = iota // the row is removed
	OutcomeDeferred         // due again at Next
	OutcomeFailed           // given up on: it waits for its message's DSN
)

// QueueOutcome is the result of one attempt at a claimed row.
type QueueOutcome struct {
	ID   int64
	Kind int // OutcomeDelivered, OutcomeDeferred or OutcomeFailed
	// Next is when a deferred row is due again.
	Next time.Time
	// Error is the reason of a deferral or failure, for the queue listing
	// and the DSN's text.
	Error string
	// The DSN fields of a failure (see QueuedMessage).
	DSNStatus, DSNDiagnostic, RemoteMTA string
}

// QueueRecord applies the outcomes of attempts at rows claimed under lease,
// all in one statement. Rows no longer held under lease (the lease ran out
// and another worker took them, or an administrator deleted them) are left
// alone, and the error then wraps ErrLeaseLost; the other outcomes are
// recorded all the same. A failed row is kept, due for nothing, until no
// recipient of its message is being tried: ClaimBounces then hands out all
// of the message's failed rows for one DSN.
func (s *Store) QueueRecord(ctx context.Context, lease string, outcomes []QueueOutcome) error {
	n := len(outcomes)
	ids, kinds, nexts := make([]int64, n), make([]int32, n), make([]time.Time, n)
	errs, statuses, diags, remotes := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, o := range outcomes {
		ids[i], kinds[i], nexts[i], errs[i] = o.ID, int32(o.Kind), o.Next, o.Error
		statuses[i], diags[i], remotes[i] = o.DSNStatus, o.DSNDiagnostic, o.RemoteMTA
		if o.Kind != OutcomeDeferred {
			nexts[i] = time.Unix(0, 0) // unused; the array has no NULLs
		}
	}
	var done int
	err := s.pool.QueryRow(ctx, `WITH o AS (
			SELECT * FROM unnest($2::bigint[], $3::int[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[])
				AS o(id, kind, next, err, status, diag, remote)
		), del AS (
			DELETE FROM outbound_queue q USING o WHERE q.id = o.id AND o.kind = 0 AND q.lease = $1 RETURNING q.id
		), upd AS (
			UPDATE outbound_queue q SET lease = NULL, last_error = o.err,
				next_attempt = CASE WHEN o.kind = 1 THEN o.next ELSE now() END,
				failed_at = CASE WHEN o.kind = 2 THEN now() END,
				dsn_status = o.status, dsn_diagnostic = o.diag, remote_mta = o.remote
			FROM o WHERE q.id = o.id AND o.kind IN (1, 2) AND q.lease = $1 RETURNING q.id
		)
		SELECT (SELECT count(*) FROM del) + (SELECT count(*) FROM upd)`,
		lease, ids, kinds, nexts, errs, statuses, diags, remotes).Scan(&done)
	if err != nil {
		return fmt.Errorf("record queue outcomes: %w", err)
	}
	if done != n {
		return fmt.Errorf("record queue outcomes: %d of %d rows: %w", n-done, n, ErrLeaseLost)
	}
	return nil
}

// ClaimBounces leases, for up to limit messages with failed rows (see
// QueueRecord) and no recipient in the middle of a delivery attempt, all
// their failed rows, ordered by message, sender and account: each such run
// is one DSN, to be sent with QueueBounce under the returned rows' lease.
// Recipients waiting for a retry do not hold a bounce back (as in
// Postfix, a permanent failure is reported at once, and a recipient that
// fails later gets a DSN of its own); recipients being tried right now do,
// so that failures of one delivery pass are reported together. A worker
// that crashes before QueueBounce leaves the rows to be claimed again when
// the lease ends.
func (s *Store) ClaimBounces(ctx context.Context, limit int, lease time.Duration) ([]QueuedMessage, error) {
	token, err := newLeaseToken()
	if err != nil {
		return nil, err
	}
	// A failed row's next_attempt is when it failed, or the end of the
	// lease of the worker bouncing it. A competing claim waits for that
	// worker's row locks and then finds next_attempt in the future: all of
	// one message's failed rows go to one claim.
	rows, err := s.pool.Query(ctx, `WITH ready AS (
			SELECT DISTINCT f.message_id, f.mail_from FROM outbound_queue f
			WHERE f.failed_at IS NOT NULL AND f.next_attempt <= now()
			  AND NOT EXISTS (SELECT 1 FROM outbound_queue p
				WHERE p.message_id = f.message_id AND p.mail_from = f.mail_from AND p.failed_at IS NULL
				  AND p.lease IS NOT NULL AND p.next_attempt > now())
			LIMIT $1
		), claimed AS (
			UPDATE outbound_queue q SET next_attempt = now() + $2::interval, lease = $3
			FROM ready r WHERE q.message_id = r.message_id AND q.mail_from = r.mail_from
			  AND q.failed_at IS NOT NULL AND q.next_attempt <= now()
			RETURNING q.*
		)
		SELECT `+queueColumns+` FROM claimed q JOIN messages m ON m.id = q.message_id
		ORDER BY q.message_id, q.mail_from, q.account_id, q.id`, limit, lease, token)
	if err != nil {
		return nil, fmt.Errorf("claim bounces: %w", err)
	}
	list, err := scanQueued(rows)
	if err != nil {
		return nil, fmt.Errorf("claim bounces: %w", err)
	}
	return list, nil
}

// QueueRelease gives rows held under lease back without an attempt: they
// are due again at once, their attempt count is restored, and every
// worker is woken to claim them.
func (s *Store) QueueRelease(ctx context.Context, ids []int64, lease string) error {
	_, err := s.pool.Exec(ctx, `WITH r AS (
			UPDATE outbound_queue SET next_attempt = now(), attempts = greatest(attempts - 1, 0), lease = NULL
			WHERE id = ANY($1) AND lease = $2 RETURNING id
		)
		SELECT pg_notify($3, '') FROM (SELECT count(*) FROM r) c`, ids, lease, QueueChannel)
	if err != nil {
		return fmt.Errorf("queue release: %w", err)
	}
	return nil
}

// QueueBounce gives up on rows (all held under lease, normally a claim of
// ClaimBounces): it delivers the delivery status notification dsn to the
// INBOX of accountID and removes the rows, in one transaction, so each
// failed recipient is reported exactly once. With dsn nil or accountID 0
// (the sender's account is gone) the rows are only removed. If any row is
// no longer held, nothing changes (ErrLeaseLost).
func (s *Store) QueueBounce(ctx context.Context, ids []int64, lease string, accountID int64, dsn *Spooled) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM outbound_queue WHERE id = ANY($1) AND lease = $2`, ids, lease)
		if err != nil {
			return err
		}
		if int(tag.RowsAffected()) != len(ids) {
			return ErrLeaseLost
		}
		if dsn == nil || accountID == 0 {
			return nil
		}
		var inbox int64
		err = tx.QueryRow(ctx, `SELECT id FROM mailboxes WHERE account_id = $1 AND name = 'INBOX'`, accountID).Scan(&inbox)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // account removed meanwhile: nobody to tell
		}
		if err != nil {
			return err
		}
		_, err = s.DeliverTx(ctx, tx, dsn, []Target{{AccountID: accountID, MailboxID: inbox}})
		if errors.Is(err, ErrOverQuota) {
			// A full mailbox must not keep the row (and retries) forever.
			s.log.Warn("bounce not delivered: sender over quota", "account", accountID)
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("queue bounce: %w", err)
	}
	return nil
}

// QueueEntries lists the whole outbound queue, oldest first (for the
// `mailstack queue list` command).
func (s *Store) QueueEntries(ctx context.Context) ([]QueuedMessage, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+queueColumns+` FROM outbound_queue q JOIN messages m ON m.id = q.message_id
		ORDER BY q.created_at, q.id`)
	if err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	list, err := scanQueued(rows)
	if err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	return list, nil
}

// RetryQueued makes a deferred row due now and wakes the workers; a failed
// row waiting for its DSN becomes pending again. A row that a worker is
// delivering (or bouncing) right now is left alone (ErrInvalid).
func (s *Store) RetryQueued(ctx context.Context, id int64) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var leased bool
		err := tx.QueryRow(ctx, `SELECT lease IS NOT NULL AND next_attempt > now() FROM outbound_queue WHERE id = $1 FOR UPDATE`,
			id).Scan(&leased)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("queue entry %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("retry queue entry: %w", err)
		}
		if leased {
			return fmt.Errorf("%w: queue entry %d is being delivered right now", ErrInvalid, id)
		}
		if _, err := tx.Exec(ctx, `UPDATE outbound_queue SET next_attempt = now(), failed_at = NULL,
			dsn_status = '', dsn_diagnostic = '', remote_mta = '' WHERE id = $1`, id); err != nil {
			return fmt.Errorf("retry queue entry: %w", err)
		}
		return notifyQueue(ctx, tx)
	})
}

// DeleteQueued removes a row without sending a bounce for it. (Failed
// rows of the same message that only waited for it are bounced next.)
func (s *Store) DeleteQueued(ctx context.Context, id int64) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM outbound_queue WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete queue entry: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("queue entry %d: %w", id, ErrNotFound)
	}
	return nil
}

// NextQueueAttempt returns when the earliest pending queue row falls due;
// ok is false when there is none.
func (s *Store) NextQueueAttempt(ctx context.Context) (next time.Time, ok bool, err error) {
	var t *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT min(next_attempt) FROM outbound_queue WHERE failed_at IS NULL`).Scan(&t); err != nil {
		return time.Time{}, false, fmt.Errorf("next queue attempt: %w", err)
	}
	if t == nil {
		return time.Time{}, false, nil
	}
	return *t, true, nil
}

// OpenQueued returns a reader of the content of the message a queue row
// carries, fetched one chunk per query (bounded memory, no connection held
// between reads), and the header block of that content (for bounces).
func (s *Store) OpenQueued(ctx context.Context, id int64) (body io.Reader, header []byte, err error) {
	var msgID, size int64
	err = s.pool.QueryRow(ctx, `SELECT m.id, m.size, m.header FROM outbound_queue q JOIN messages m ON m.id = q.message_id
		WHERE q.id = $1`, id).Scan(&msgID, &size, &header)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("queue entry %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open queued message: %w", err)
	}
	return &bodyReader{ctx: ctx, s: s, id: msgID, off: 0, end: size}, header, nil
}

// ListenQueue blocks until ctx ends, sending on wake (without blocking)
// whenever mail is queued or made due by any process, and whenever such
// notifications may have been lost (once listening, and after the LISTEN
// connection came back). It subscribes to the process's one LISTEN
// connection (Listen).
func (s *Store) ListenQueue(ctx context.Context, wake chan<- struct{}) {
	s.listenWake(ctx, QueueChannel, wake)
}
