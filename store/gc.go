package store

import (
	"context"
	"fmt"
	"time"
)

// CollectGarbage deletes message contents (and their chunks) that no
// mailbox, no queued delivery and no pending junk learning references any
// more, in batches, and returns how many it deleted. Contents younger than grace are kept: a
// delivery may be about to reference them. Rows a concurrent delivery has
// locked are skipped, so it is safe to run in every process.
func (s *Store) CollectGarbage(ctx context.Context, grace time.Duration) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM messages WHERE id IN (
			SELECT m.id FROM messages m
			WHERE m.created_at < now() - $1::interval
			  AND NOT EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.message_id = m.id)
			  AND NOT EXISTS (SELECT 1 FROM outbound_queue q WHERE q.message_id = m.id)
			  AND NOT EXISTS (SELECT 1 FROM junk_learn j WHERE j.message_id = m.id AND j.done_at IS NULL)
			LIMIT 500 FOR UPDATE SKIP LOCKED)`, grace)
		if err != nil {
			return total, fmt.Errorf("collect garbage: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 500 {
			return total, nil
		}
	}
}

// PruneAuthEvents deletes login activity older than keep, so the log that
// every attempt (failed ones included) writes to cannot grow without bound.
func (s *Store) PruneAuthEvents(ctx context.Context, keep time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM auth_events WHERE at < now() - $1::interval`, keep)
	if err != nil {
		return 0, fmt.Errorf("prune activity log: %w", err)
	}
	return tag.RowsAffected(), nil
}
