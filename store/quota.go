package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// QuotaFull reports whether the account cannot take size more bytes: it
// has a quota and its mailboxes already hold more than the quota less
// size. SMTP servers ask at RCPT, per recipient (with the size the client
// declared, or 1), as Postfix does with Dovecot's quota service; delivery
// checks again in its transaction.
func (s *Store) QuotaFull(ctx context.Context, accountID, size int64) (bool, error) {
	q, err := s.Quota(ctx, accountID)
	if err != nil {
		return false, err
	}
	return q.LimitBytes > 0 && q.UsedBytes+size > q.LimitBytes, nil
}

// QuotaUsage is an account's storage quota and what its mailboxes hold.
type QuotaUsage struct {
	LimitBytes int64 // 0: unlimited
	UsedBytes  int64
	Messages   int64
}

// Quota returns the account's quota and usage from the mailboxes' cached
// counters: one query.
func (s *Store) Quota(ctx context.Context, accountID int64) (QuotaUsage, error) {
	var q QuotaUsage
	err := s.pool.QueryRow(ctx, `SELECT a.quota_bytes, coalesce(sum(m.size), 0)::bigint, coalesce(sum(m.messages), 0)::bigint
		FROM accounts a LEFT JOIN mailboxes m ON m.account_id = a.id
		WHERE a.id = $1 GROUP BY a.id`, accountID).Scan(&q.LimitBytes, &q.UsedBytes, &q.Messages)
	if errors.Is(err, pgx.ErrNoRows) {
		return q, fmt.Errorf("account %d: %w", accountID, ErrNotFound)
	}
	if err != nil {
		return q, fmt.Errorf("quota: %w", err)
	}
	return q, nil
}

// DeletedSize returns the octets an EXPUNGE of the mailbox would free: the
// sizes of its messages flagged \Deleted (STATUS DELETED-STORAGE, RFC 9208
// §4.2). It reads the mailbox's messages, so it is asked only when a
// client wants it.
func (s *Store) DeletedSize(ctx context.Context, accountID, mailboxID int64) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(size), 0)::bigint FROM mailbox_messages
		WHERE mailbox_id = $1 AND account_id = $2 AND flags & $3 <> 0`, mailboxID, accountID, flagDeleted).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("deleted size: %w", err)
	}
	return n, nil
}
