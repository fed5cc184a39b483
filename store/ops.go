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

// StorageStats counts stored message contents: each distinct content is one
// row however many mailboxes hold it, in chunks of ChunkSize.
type StorageStats struct {
	Contents, Chunks, Bytes int64
}

// Storage returns the current StorageStats, for metrics and tests.
func (s *Store) Storage(ctx context.Context) (StorageStats, error) {
	var st StorageStats
	err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM messages), count(*), coalesce(sum(length(data)), 0)
		FROM message_chunks`).Scan(&st.Contents, &st.Chunks, &st.Bytes)
	if err != nil {
		return st, fmt.Errorf("storage stats: %w", err)
	}
	return st, nil
}
