package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/internal/mailaddr"
)

// SetAdmin makes an account an administrator of the server (on the
// account web) or not.
func (s *Store) SetAdmin(ctx context.Context, address string, admin bool) error {
	return s.execOne(ctx, "set administrator", address, `UPDATE accounts SET admin = $2 WHERE address = $1`,
		mailaddr.Key(address), admin)
}

// SetQuota changes an account's storage quota (0: unlimited).
func (s *Store) SetQuota(ctx context.Context, address string, quota int64) error {
	if quota < 0 {
		return fmt.Errorf("%w: negative quota", ErrInvalid)
	}
	return s.execOne(ctx, "set quota", address, `UPDATE accounts SET quota_bytes = $2 WHERE address = $1`,
		mailaddr.Key(address), quota)
}

// AccountUsage is an account as the administrators' page lists it.
type AccountUsage struct {
	Account
	Admin       bool
	TOTPEnabled bool
	UsedBytes   int64
}

// AccountUsages lists every account with its storage used, by address.
func (s *Store) AccountUsages(ctx context.Context) ([]AccountUsage, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+accountColumns+`, admin, totp_secret IS NOT NULL,
			coalesce((SELECT sum(m.size) FROM mailboxes m WHERE m.account_id = accounts.id), 0)::bigint
		FROM accounts ORDER BY address`)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (AccountUsage, error) {
		var u AccountUsage
		a := &u.Account
		err := r.Scan(&a.ID, &a.DomainID, &a.Address, &a.QuotaBytes, &a.RequireAppPasswords, &a.Disabled, &a.CreatedAt,
			&u.Admin, &u.TOTPEnabled, &u.UsedBytes)
		return u, err
	})
}
