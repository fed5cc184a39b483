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
	var full bool
	err := s.pool.QueryRow(ctx, `SELECT a.quota_bytes > 0 AND
			coalesce((SELECT sum(m.size) FROM mailboxes m WHERE m.account_id = a.id), 0) + $2 > a.quota_bytes
		FROM accounts a WHERE a.id = $1`, accountID, size).Scan(&full)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("account %d: %w", accountID, ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("quota: %w", err)
	}
	return full, nil
}
