package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ImportMark is how far an import from one source folder has come (see
// migration 0011): every message up to LastUID of the folder as it was
// at UIDValidity is stored.
type ImportMark struct {
	Source      string // the server and user, e.g. imaps://user@imap.example.com
	Folder      string // the folder's name at the source
	UIDValidity uint32
	LastUID     uint32
}

// ImportMarks returns the marks of the account's imports from source,
// keyed by source folder.
func (s *Store) ImportMarks(ctx context.Context, accountID int64, source string) (map[string]ImportMark, error) {
	rows, err := s.pool.Query(ctx, `SELECT folder, uidvalidity, last_uid FROM import_state
		WHERE account_id = $1 AND source = $2`, accountID, source)
	if err != nil {
		return nil, fmt.Errorf("import marks: %w", err)
	}
	marks := map[string]ImportMark{}
	var folder string
	var uidvalidity, last int64
	if _, err := pgx.ForEachRow(rows, []any{&folder, &uidvalidity, &last}, func() error {
		marks[folder] = ImportMark{Source: source, Folder: folder, UIDValidity: uint32(uidvalidity), LastUID: uint32(last)}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("import marks: %w", err)
	}
	return marks, nil
}

// ImportAppend is BulkAppendFunc that also records mark (when its Source
// is not empty) in the same transaction: the messages and the mark commit
// together or not at all. The mark is written even if next yields no
// message (everything skipped or failed at the source).
func (s *Store) ImportAppend(ctx context.Context, accountID, mailboxID int64, mark ImportMark, next func() (*BulkMessage, error)) (*BulkResult, error) {
	var after func(pgx.Tx) error
	if mark.Source != "" {
		after = func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO import_state (account_id, source, folder, uidvalidity, last_uid)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (account_id, source, folder) DO UPDATE
				SET uidvalidity = EXCLUDED.uidvalidity, last_uid = EXCLUDED.last_uid, updated_at = now()`,
				accountID, mark.Source, mark.Folder, int64(mark.UIDValidity), int64(mark.LastUID))
			if err != nil {
				return fmt.Errorf("record import mark: %w", err)
			}
			return nil
		}
	}
	return s.bulkAppend(ctx, accountID, mailboxID, next, true, after)
}

// ContentHashes calls fn with the SHA-256 of the content of every message
// in the mailbox (mailboxID 0: in any mailbox of the account), once per
// message, streaming rows. Imports use it to skip what a target already
// holds.
func (s *Store) ContentHashes(ctx context.Context, accountID, mailboxID int64, fn func(sum [32]byte) error) error {
	q := `SELECT m.sha256 FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id WHERE mm.account_id = $1`
	args := []any{accountID}
	if mailboxID != 0 { // separate statements, so each uses its index
		q += ` AND mm.mailbox_id = $2`
		args = append(args, mailboxID)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("content hashes: %w", err)
	}
	var sum []byte
	if _, err := pgx.ForEachRow(rows, []any{&sum}, func() error {
		var k [32]byte
		copy(k[:], sum)
		return fn(k)
	}); err != nil {
		return fmt.Errorf("content hashes: %w", err)
	}
	return nil
}

// ValidFlag reports whether the store can keep flag on a message: a
// system flag it knows or a keyword that is an IMAP atom. Imports drop
// the others rather than fail the message.
func ValidFlag(flag string) bool {
	_, _, err := parseFlags([]string{flag})
	return err == nil
}
