package store

import (
	"context"
	"fmt"
)

// Ping checks that the database answers a query, for health checks.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.pool.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("database health: %w", err)
	}
	return nil
}

// QueueDepth returns how many outbound messages wait in the queue, across
// all processes, for the metrics endpoint.
func (s *Store) QueueDepth(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM outbound_queue`).Scan(&n); err != nil {
		return 0, fmt.Errorf("queue depth: %w", err)
	}
	return n, nil
}
