package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/acme/autocert"
)

// CertCache is autocert's certificate cache kept in PostgreSQL, so that
// every process shares one ACME account, one set of certificates and the
// pending HTTP-01 tokens. The data holds private keys: the database is
// already where DKIM keys and password hashes live, and is protected alike.
type CertCache struct{ s *Store }

var _ autocert.Cache = CertCache{}

// CertCache returns the store's ACME certificate cache.
func (s *Store) CertCache() CertCache { return CertCache{s} }

// Get returns the data stored under key, or autocert.ErrCacheMiss.
func (c CertCache) Get(ctx context.Context, key string) ([]byte, error) {
	var data []byte
	err := c.s.pool.QueryRow(ctx, `SELECT data FROM acme_cache WHERE key = $1`, key).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, autocert.ErrCacheMiss
	}
	if err != nil {
		return nil, fmt.Errorf("certificate cache get %s: %w", key, err)
	}
	return data, nil
}

// Put stores data under key, replacing what was there.
func (c CertCache) Put(ctx context.Context, key string, data []byte) error {
	_, err := c.s.pool.Exec(ctx, `INSERT INTO acme_cache (key, data) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = now()`, key, data)
	if err != nil {
		return fmt.Errorf("certificate cache put %s: %w", key, err)
	}
	return nil
}

// Delete removes key; removing a missing key is not an error.
func (c CertCache) Delete(ctx context.Context, key string) error {
	if _, err := c.s.pool.Exec(ctx, `DELETE FROM acme_cache WHERE key = $1`, key); err != nil {
		return fmt.Errorf("certificate cache delete %s: %w", key, err)
	}
	return nil
}
