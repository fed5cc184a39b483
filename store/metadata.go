package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Limits of METADATA (RFC 5464) entries, per account: server and mailbox
// entries together. Names count toward the total as well as values.
const (
	MaxMetadataValue   = 64 << 10 // octets of one value
	MaxMetadataEntries = 1000     // entries of an account
	MaxMetadataTotal   = 1 << 20  // octets of all names and values of an account
)

// ErrMetadataFull says a SETMETADATA would take the account past
// MaxMetadataEntries or MaxMetadataTotal; nothing of it was stored.
var ErrMetadataFull = errors.New("metadata limit reached")

// MetadataEntry is one METADATA entry of an account or of one of its
// mailboxes. Names are lower case ("/private/comment").
type MetadataEntry struct {
	Name string
	// Value is the entry's value; in SetMetadata nil deletes the entry.
	// Metadata leaves it nil for an entry larger than its maxSize.
	Value []byte
	Size  int64 // Metadata: the value's length in octets
}

// SetMetadata sets and deletes (nil Value) entries of the account
// (mailboxID 0) or of one of its mailboxes, all or none. A name given twice
// takes its last value. It fails with ErrNotFound if the mailbox is not
// the account's (or was deleted), ErrMetadataFull past the limits; values
// longer than MaxMetadataValue are the caller's to refuse.
func (s *Store) SetMetadata(ctx context.Context, accountID, mailboxID int64, entries []MetadataEntry) error {
	last := map[string]int{}
	for i, e := range entries {
		last[e.Name] = i
	}
	var setNames, delNames []string
	var setValues [][]byte
	for i, e := range entries {
		switch {
		case last[e.Name] != i:
		case e.Value == nil:
			delNames = append(delNames, e.Name)
		default:
			setNames = append(setNames, e.Name)
			setValues = append(setValues, e.Value)
		}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The account row lock orders writers, so that the limits hold
		// (DeleteMailbox takes it too).
		var ok bool
		err := tx.QueryRow(ctx, `SELECT $2 = 0 OR EXISTS (SELECT 1 FROM mailboxes WHERE id = $2 AND account_id = $1)
			FROM accounts WHERE id = $1 FOR NO KEY UPDATE`, accountID, mailboxID).Scan(&ok)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && !ok {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if len(delNames) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM metadata WHERE account_id = $1 AND coalesce(mailbox_id, 0) = $2 AND name = ANY($3)`,
				accountID, mailboxID, delNames); err != nil {
				return err
			}
		}
		if len(setNames) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO metadata (account_id, mailbox_id, name, value)
			SELECT $1, nullif($2::bigint, 0), n, v FROM unnest($3::text[], $4::bytea[]) AS e(n, v)
			ON CONFLICT (account_id, coalesce(mailbox_id, 0), name) DO UPDATE SET value = EXCLUDED.value`,
			accountID, mailboxID, setNames, setValues); err != nil {
			return err
		}
		var n, total int64
		if err := tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(octet_length(name) + octet_length(value)), 0)
			FROM metadata WHERE account_id = $1`, accountID).Scan(&n, &total); err != nil {
			return err
		}
		if n > MaxMetadataEntries || total > MaxMetadataTotal {
			return ErrMetadataFull
		}
		return nil
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" {
		// The mailbox was deleted meanwhile.
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("set metadata: %w", err)
	}
	return nil
}

// MetadataQuery says which entries Metadata returns: those named in Names
// and, with Depth 1 or more, those below them (Depth 1: one level only).
// Values longer than MaxSize (if not negative) are left out of the result's
// Value.
type MetadataQuery struct {
	Names   []string
	Depth   int // 0, 1, or -1 for infinity
	MaxSize int64
}

// Matches reports whether q selects the entry named name: Metadata's rule,
// in Go, for entries that are not stored (computed by the protocol layer).
func (q MetadataQuery) Matches(name string) bool {
	for _, n := range q.Names {
		if name == n {
			return true
		}
		rest, ok := strings.CutPrefix(name, n+"/")
		if ok && (q.Depth < 0 || q.Depth == 1 && !strings.Contains(rest, "/")) {
			return true
		}
	}
	return false
}

// Metadata returns the stored entries of the account (mailboxID 0) or of
// one of its mailboxes that q asks for, ordered by name: one query.
func (s *Store) Metadata(ctx context.Context, accountID, mailboxID int64, q MetadataQuery) ([]MetadataEntry, error) {
	var prefixes []string
	if q.Depth != 0 {
		prefixes = make([]string, len(q.Names))
		for i, n := range q.Names {
			prefixes[i] = n + "/"
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT name, octet_length(value), CASE WHEN $5 < 0 OR octet_length(value) <= $5 THEN value END
		FROM metadata WHERE account_id = $1 AND coalesce(mailbox_id, 0) = $2
			AND (name = ANY($3) OR EXISTS (SELECT 1 FROM unnest($4::text[]) p
				WHERE starts_with(name, p) AND ($6 OR strpos(substr(name, length(p) + 1), '/') = 0)))
		ORDER BY name`, accountID, mailboxID, q.Names, prefixes, q.MaxSize, q.Depth < 0)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	var out []MetadataEntry
	var e MetadataEntry
	_, err = pgx.ForEachRow(rows, []any{&e.Name, &e.Size, &e.Value}, func() error {
		out = append(out, e)
		e.Value = nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	return out, nil
}
