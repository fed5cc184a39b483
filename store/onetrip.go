package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// contentByHash is the SQL of the content id in the statements of
// storeInOneTrip, which know the content by its SHA-256 ($6 or $1).
func contentByHash(param string) string {
	return `(SELECT id FROM messages WHERE sha256 = ` + param + `)`
}

// storeInOneTrip stores a message that fits one chunk, adds it to the
// targets and queues it for remote, all in one round trip: one pipelined
// batch without BEGIN, which PostgreSQL runs up to its single Sync as one
// implicit transaction, committed at the Sync if every statement succeeded
// and rolled back otherwise. The statements after the content's insert find
// the content by SHA-256 with a fresh snapshot, so they see this batch's
// insert or the concurrent one ON CONFLICT waited for; the foreign keys of
// the rows they insert lock it FOR KEY SHARE, as insertMessageTx does,
// against garbage collection.
//
// It reports fallback when the batch failed in a way the transaction path
// handles: the content vanished (garbage collection won the race), a
// target mailbox is missing, \Noselect or over quota (the transaction path
// tells which), or a transaction conflict. Nothing was committed then.
// Callers use it only if there is a target or a remote recipient. A login
// not nil is checked first (insertMessageSQL): if it is no longer
// valid the batch fails with ErrAccountGone.
func (s *Store) storeInOneTrip(ctx context.Context, login *Login, msg *Spooled, targets []Target, remote []Outbound) (results []AppendResult, fallback bool, err error) {
	header, structure, err := messageMeta(msg)
	if err != nil {
		return nil, false, err
	}
	body := make([]byte, msg.Size)
	if _, err := io.ReadFull(msg.Reader(), body); err != nil {
		return nil, false, fmt.Errorf("read spooled message: %w", err)
	}
	b := &pgx.Batch{}
	keys := sortKeyArgs(msg, header)
	args := []any{msg.SHA256[:], msg.Size, header, structure, body, keys[0], keys[1], keys[2]}
	if login != nil {
		args = append(args, login.AccountID, login.AppPasswordID)
	}
	b.Queue(insertMessageSQL(login != nil), args...)
	order := lockOrder(targets)
	for _, i := range order {
		args, kw, err := deliverArgs(targets[i], msg.Size, msg.SHA256[:])
		if err != nil {
			return nil, false, err
		}
		b.Queue(deliverSQL(contentByHash("$6"), true, kw), args...)
	}
	if len(remote) > 0 {
		b.Queue(enqueueSQL(contentByHash("$1")), enqueueArgs(msg.SHA256[:], remote)...)
	}

	br := s.pool.SendBatch(ctx, b)
	results = make([]AppendResult, len(targets))
	err = func() error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		for _, i := range order {
			r := &results[i]
			if err := br.QueryRow().Scan(r.scan()...); err != nil {
				return err
			}
			r.Flags = storedFlags(targets[i].Flags)
		}
		if len(remote) > 0 {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return nil
	}()
	// Close reads up to the Sync's reply: only then has the implicit
	// transaction committed (or reported why it did not).
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == sessionGoneCode {
		return nil, false, ErrAccountGone
	}
	if err != nil {
		return nil, retryOnTx(err), err
	}
	if len(targets) == 0 {
		results = nil
	}
	return results, false, nil
}

// retryOnTx says whether a failed storeInOneTrip should be redone on the
// transaction path: an integrity violation (a NULL uid from deliverSQL's
// mustMatch, a NULL or vanished content id) or a transaction conflict
// (serialization failure, deadlock). A server error means the implicit
// transaction rolled back.
func retryOnTx(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return strings.HasPrefix(pe.Code, "23") || strings.HasPrefix(pe.Code, "40")
}
