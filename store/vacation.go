package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/internal/mailaddr"
)

// Vacation is an account's automatic reply (RFC 3834), sent by the MX to
// mail that arrives while it is on.
type Vacation struct {
	Enabled bool
	Subject string
	Body    string
	// Starts and Ends bound the days it answers (inclusive); nil: open.
	Starts, Ends *time.Time
	// IntervalDays: each sender gets at most one reply in this many days.
	IntervalDays int
}

// Limits on a vacation reply's text.
const (
	MaxVacationSubject = 200
	MaxVacationBody    = 10000
)

// DefaultVacationInterval is the days between two replies to one sender
// (Sieve vacation's default, RFC 5230 §4.1).
const DefaultVacationInterval = 7

// Vacation returns the account's vacation reply (off, with the default
// interval, if never set).
func (s *Store) Vacation(ctx context.Context, accountID int64) (*Vacation, error) {
	v := Vacation{IntervalDays: DefaultVacationInterval}
	err := s.pool.QueryRow(ctx, `SELECT enabled, subject, body, starts, ends, interval_days FROM vacations WHERE account_id = $1`,
		accountID).Scan(&v.Enabled, &v.Subject, &v.Body, &v.Starts, &v.Ends, &v.IntervalDays)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("vacation: %w", err)
	}
	return &v, nil
}

// SetVacation saves the account's vacation reply and forgets whom the
// previous one answered, so the new text reaches them too.
func (s *Store) SetVacation(ctx context.Context, accountID int64, v Vacation) error {
	switch {
	case len(v.Subject) > MaxVacationSubject || strings.ContainsAny(v.Subject, "\r\n"):
		return fmt.Errorf("%w: the subject must be one line of at most %d bytes", ErrInvalid, MaxVacationSubject)
	case len(v.Body) > MaxVacationBody:
		return fmt.Errorf("%w: the text must be at most %d bytes", ErrInvalid, MaxVacationBody)
	case v.IntervalDays < 1 || v.IntervalDays > 365:
		return fmt.Errorf("%w: the interval must be 1 to 365 days", ErrInvalid)
	case v.Starts != nil && v.Ends != nil && v.Ends.Before(*v.Starts):
		return fmt.Errorf("%w: the last day is before the first", ErrInvalid)
	}
	_, err := s.pool.Exec(ctx, `WITH d AS (DELETE FROM vacation_replies WHERE account_id = $1)
		INSERT INTO vacations (account_id, enabled, subject, body, starts, ends, interval_days)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (account_id) DO UPDATE SET enabled = $2, subject = $3, body = $4, starts = $5, ends = $6, interval_days = $7`,
		accountID, v.Enabled, v.Subject, v.Body, v.Starts, v.Ends, v.IntervalDays)
	if err != nil {
		return fmt.Errorf("set vacation: %w", err)
	}
	return nil
}

// VacationReply is a reply ClaimVacationReplies decided on: the text and
// the account it comes from.
type VacationReply struct {
	AccountID int64
	Address   string // the account's address, the reply's From
	Subject   string
	Body      string
}

// ClaimVacationReplies decides, in one statement for all recipient
// accounts of a delivery, which answer sender now, and records those
// replies (so no other delivery, in any process, answers again within the
// interval). An account answers when its vacation reply is on today, the
// sender is neither its address nor one of its aliases (never to itself),
// its address or an alias is among candidates (the message's To and Cc:
// mail that reached it by Bcc or a list is not answered, RFC 5230 §4.5),
// and it has not answered sender within its interval.
func (s *Store) ClaimVacationReplies(ctx context.Context, accountIDs []int64, sender string, candidates []string) ([]VacationReply, error) {
	rows, err := s.pool.Query(ctx, `WITH v AS (
			SELECT v.account_id, v.subject, v.body, v.interval_days, a.address FROM vacations v JOIN accounts a ON a.id = v.account_id
			WHERE v.account_id = ANY($1) AND v.enabled AND NOT a.disabled
				AND (v.starts IS NULL OR v.starts <= current_date) AND (v.ends IS NULL OR v.ends >= current_date)
				AND a.address <> $2 AND NOT EXISTS (SELECT 1 FROM aliases al WHERE al.account_id = a.id AND al.address = $2)
				AND (a.address = ANY($3) OR EXISTS (SELECT 1 FROM aliases al WHERE al.account_id = a.id AND al.address = ANY($3)))),
		ins AS (INSERT INTO vacation_replies (account_id, sender) SELECT account_id, $2 FROM v
			ON CONFLICT (account_id, sender) DO UPDATE SET sent_at = now()
			WHERE vacation_replies.sent_at < now() - make_interval(days =>
				(SELECT interval_days FROM v WHERE v.account_id = vacation_replies.account_id))
			RETURNING account_id)
		SELECT v.account_id, v.address, v.subject, v.body FROM v JOIN ins USING (account_id) ORDER BY v.account_id`,
		accountIDs, mailaddr.Key(sender), candidates)
	if err != nil {
		return nil, fmt.Errorf("vacation replies: %w", err)
	}
	replies, err := pgx.CollectRows(rows, pgx.RowToStructByPos[VacationReply])
	if err != nil {
		return nil, fmt.Errorf("vacation replies: %w", err)
	}
	return replies, nil
}
