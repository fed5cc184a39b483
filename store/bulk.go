package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
)

// BulkMessage is one message for BulkAppendFunc.
type BulkMessage struct {
	Msg          *Spooled
	Flags        []string
	InternalDate time.Time // zero: now
}

// BulkResult says where a bulk append landed: UIDs FirstUID..LastUID were
// assigned in input order (both 0 if there was nothing to append), all with
// the one new ModSeq.
type BulkResult struct {
	UIDValidity       uint32
	FirstUID, LastUID uint32
	ModSeq            uint64
}

// bulkBatchSize is how many messages BulkAppendFunc holds at a time.
const bulkBatchSize = 1000

// BulkAppend appends many messages to one mailbox in one transaction using
// COPY (the basis of imports and of benchmarks' large mailboxes). flags and
// dates may be nil or shorter than msgs (missing entries: no flags, now).
// The caller keeps ownership of msgs.
func (s *Store) BulkAppend(ctx context.Context, accountID, mailboxID int64, msgs []*Spooled, flags [][]string, dates []time.Time) (*BulkResult, error) {
	i := 0
	return s.bulkAppend(ctx, accountID, mailboxID, func() (*BulkMessage, error) {
		if i == len(msgs) {
			return nil, nil
		}
		m := &BulkMessage{Msg: msgs[i]}
		if i < len(flags) {
			m.Flags = flags[i]
		}
		if i < len(dates) {
			m.InternalDate = dates[i]
		}
		i++
		return m, nil
	}, false, nil)
}

// BulkAppendFunc is the streaming form of BulkAppend: it calls next until
// it returns nil (or an error, which aborts everything) and holds at most
// a batch of messages at a time, closing each message's spool once it has
// been written (also when failing). Everything commits in one transaction:
// either all messages are appended or none.
//
// Invariants are those of Deliver: UIDs ascend in input order under the
// mailbox row lock, the mailbox's modseq is bumped once (all new messages
// carry it), cached counters and the quota are checked and updated in the
// same transaction and the mailbox is notified once. Contents already
// stored (same SHA-256) are shared, not duplicated.
//
// A concurrent delivery of the same new content can make the transaction
// fail with a unique violation; the caller may retry.
func (s *Store) BulkAppendFunc(ctx context.Context, accountID, mailboxID int64, next func() (*BulkMessage, error)) (*BulkResult, error) {
	return s.bulkAppend(ctx, accountID, mailboxID, next, true, nil)
}

// bulkAppend is BulkAppend and BulkAppendFunc; after, if not nil, runs in
// the transaction once the messages are written (also when there were
// none), so that what it records commits with them or not at all.
func (s *Store) bulkAppend(ctx context.Context, accountID, mailboxID int64, next func() (*BulkMessage, error), closeMsgs bool,
	after func(tx pgx.Tx) error) (*BulkResult, error) {
	res := &BulkResult{}
	batch := make([]*BulkMessage, 0, bulkBatchSize)
	release := func() {
		if closeMsgs {
			for _, m := range batch {
				if m != nil && m.Msg != nil {
					m.Msg.Close()
				}
			}
		}
		batch = batch[:0]
	}
	defer release()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		uidnext, modseq, err := lockMailbox(ctx, tx, accountID, mailboxID)
		if err != nil {
			return err
		}
		var uidvalidity int64
		if err := tx.QueryRow(ctx, `SELECT uidvalidity FROM mailboxes WHERE id = $1 AND account_id = $2`,
			mailboxID, accountID).Scan(&uidvalidity); err != nil {
			return err
		}
		modseq++
		b := &bulkWriter{tx: tx, accountID: accountID, mailboxID: mailboxID, uid: uidnext, modseq: modseq,
			known: map[[32]byte]int64{}, keywords: keywordSet{}}
		for eof := false; !eof; {
			release()
			for len(batch) < bulkBatchSize {
				m, err := next()
				if err != nil {
					return err
				}
				if m == nil {
					eof = true
					break
				}
				if m.Msg == nil {
					return fmt.Errorf("%w: bulk message without content", ErrInvalid)
				}
				batch = append(batch, m)
			}
			if len(batch) > 0 {
				if err := b.write(ctx, batch); err != nil {
					return err
				}
			}
		}
		if after != nil {
			if err := after(tx); err != nil {
				return err
			}
		}
		if b.c.messages == 0 {
			return nil
		}
		if err := checkQuota(ctx, tx, accountID, b.c.size); err != nil {
			return err
		}
		if err := updateMailbox(ctx, tx, accountID, mailboxID, b.uid, modseq, b.c, b.keywords.list()); err != nil {
			return err
		}
		res = &BulkResult{UIDValidity: uint32(uidvalidity), FirstUID: uint32(uidnext), LastUID: uint32(b.uid - 1), ModSeq: uint64(modseq)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bulk append: %w", err)
	}
	return res, nil
}

type bulkWriter struct {
	tx                   pgx.Tx
	accountID, mailboxID int64
	uid, modseq          int64 // next UID to assign; the new modseq
	known                map[[32]byte]int64
	c                    counts
	keywords             keywordSet // of every message written, for the mailbox's list
	buf                  []byte
}

// write stores one batch: new contents (messages, then chunks) and the
// mailbox rows, with three COPYs.
func (b *bulkWriter) write(ctx context.Context, batch []*BulkMessage) error {
	tx := b.tx
	bits := make([]int, len(batch))
	keywords := make([][]string, len(batch))
	for i, m := range batch {
		var err error
		if bits[i], keywords[i], err = parseFlags(m.Flags); err != nil {
			return err
		}
		b.keywords.add(keywords[i])
	}
	// Contents already in the database, locked against garbage collection
	// as insertMessageTx does.
	var lookup [][]byte
	seen := map[[32]byte]bool{}
	for _, m := range batch {
		if _, ok := b.known[m.Msg.SHA256]; !ok && !seen[m.Msg.SHA256] {
			seen[m.Msg.SHA256] = true
			lookup = append(lookup, m.Msg.SHA256[:])
		}
	}
	if len(lookup) > 0 {
		rows, err := tx.Query(ctx, `SELECT id, sha256 FROM messages WHERE sha256 = ANY($1) FOR KEY SHARE`, lookup)
		if err != nil {
			return err
		}
		var id int64
		var sum []byte
		if _, err := pgx.ForEachRow(rows, []any{&id, &sum}, func() error {
			var k [32]byte
			copy(k[:], sum)
			b.known[k] = id
			return nil
		}); err != nil {
			return err
		}
	}
	// New contents, once each.
	var fresh []*Spooled
	for _, m := range batch {
		if _, ok := b.known[m.Msg.SHA256]; !ok {
			b.known[m.Msg.SHA256] = 0 // placeholder until an id is assigned
			fresh = append(fresh, m.Msg)
		}
	}
	if len(fresh) > 0 {
		rows, err := tx.Query(ctx, `SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, $1)`, len(fresh))
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if len(ids) != len(fresh) {
			return fmt.Errorf("allocated %d message ids for %d messages", len(ids), len(fresh))
		}
		for i, m := range fresh {
			b.known[m.SHA256] = ids[i]
		}
		i := 0
		var keys [][]any // message_keys rows, gathered while the header is at hand
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"messages"}, []string{"id", "sha256", "size", "header", "structure"},
			pgx.CopyFromFunc(func() ([]any, error) {
				if i == len(fresh) {
					return nil, nil
				}
				m := fresh[i]
				i++
				header, err := m.Header()
				if err != nil {
					return nil, err
				}
				structure, err := json.Marshal(m.Structure)
				if err != nil {
					return nil, fmt.Errorf("encode structure: %w", err)
				}
				keys = append(keys, sortKeyRow(b.known[m.SHA256], m.Structure, header))
				return []any{b.known[m.SHA256], m.SHA256[:], m.Size, header, json.RawMessage(structure)}, nil
			})); err != nil {
			return fmt.Errorf("store messages: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"message_keys"}, sortKeyColumnList, pgx.CopyFromRows(keys)); err != nil {
			return fmt.Errorf("store sort keys: %w", err)
		}
		if err := b.copyChunks(ctx, fresh); err != nil {
			return fmt.Errorf("store bodies: %w", err)
		}
	}
	now := time.Now()
	i := 0
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"mailbox_messages"},
		[]string{"mailbox_id", "uid", "message_id", "account_id", "internal_date", "size", "flags", "keywords", "modseq"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == len(batch) {
				return nil, nil
			}
			m := batch[i]
			date := m.InternalDate
			if date.IsZero() {
				date = now
			}
			row := []any{b.mailboxID, b.uid, b.known[m.Msg.SHA256], b.accountID, date, m.Msg.Size, bits[i], keywords[i], b.modseq}
			b.c.add(countsOf(bits[i], m.Msg.Size))
			b.uid++
			i++
			return row, nil
		})); err != nil {
		return fmt.Errorf("store mailbox rows: %w", err)
	}
	return nil
}

// copyChunks streams the bodies of msgs into message_chunks, one chunk in
// memory at a time.
func (b *bulkWriter) copyChunks(ctx context.Context, msgs []*Spooled) error {
	if b.buf == nil {
		b.buf = make([]byte, ChunkSize)
	}
	i, seq := 0, 0
	var r io.Reader
	_, err := b.tx.CopyFrom(ctx, pgx.Identifier{"message_chunks"}, []string{"message_id", "seq", "data"},
		pgx.CopyFromFunc(func() ([]any, error) {
			for i < len(msgs) {
				if r == nil {
					r, seq = msgs[i].Reader(), 0
				}
				n, err := io.ReadFull(r, b.buf)
				if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
					return nil, err
				}
				if n == 0 {
					i, r = i+1, nil
					continue
				}
				seq++
				return []any{b.known[msgs[i].SHA256], seq - 1, b.buf[:n]}, nil
			}
			return nil, nil
		}))
	return err
}
