package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/internal/mimeindex"
)

// SelectMailbox returns a mailbox and the UIDs of all its messages in
// ascending order, read from one consistent snapshot (the view a session
// builds its sequence numbers from).
func (s *Store) SelectMailbox(ctx context.Context, accountID, mailboxID int64) (*Mailbox, []uint32, error) {
	var mb *Mailbox
	var uids []uint32
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		mb, err = scanMailbox(tx.QueryRow(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE id = $1 AND account_id = $2`,
			mailboxID, accountID))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if mb.NoSelect {
			return ErrNoSelect
		}
		rows, err := tx.Query(ctx, `SELECT uid FROM mailbox_messages WHERE mailbox_id = $1 AND account_id = $2 ORDER BY uid`,
			mailboxID, accountID)
		if err != nil {
			return err
		}
		uids = make([]uint32, 0, mb.Messages)
		var uid int64
		_, err = pgx.ForEachRow(rows, []any{&uid}, func() error {
			uids = append(uids, uint32(uid))
			return nil
		})
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("select mailbox: %w", err)
	}
	return mb, uids, nil
}

// FirstUnseenUID returns the lowest UID of the mailbox's messages without
// \Seen, or 0 if every message is seen: one probe of the partial index on
// unseen messages, whatever the size of the mailbox.
func (s *Store) FirstUnseenUID(ctx context.Context, accountID, mailboxID int64) (uint32, error) {
	var uid *int64
	err := s.pool.QueryRow(ctx, `SELECT min(uid) FROM mailbox_messages WHERE mailbox_id = $1 AND account_id = $2 AND flags & `+
		strconv.Itoa(flagSeen)+` = 0`, mailboxID, accountID).Scan(&uid)
	if err != nil {
		return 0, fmt.Errorf("first unseen: %w", err)
	}
	if uid == nil {
		return 0, nil
	}
	return uint32(*uid), nil
}

// MessageMeta is what FETCH needs of a message without reading its body.
type MessageMeta struct {
	UID          uint32
	MessageID    int64 // content id, for OpenBody
	Flags        []string
	ModSeq       uint64
	InternalDate time.Time
	Size         int64
	// Structure and Header are filled only when asked for in FetchOptions.
	Structure *mimeindex.Message
	// Header is the top-level header block, truncated to MaxStoredHeader;
	// HeaderSize is its real size (where the body starts).
	Header     []byte
	HeaderSize int64
	// Body is the whole message when FetchOptions.Body asked for it and
	// the message is at most InlineBodySize bytes; nil otherwise.
	Body []byte
}

// InlineBodySize is the largest message FetchMeta returns whole (with
// FetchOptions.Body): reading a small body with its metadata saves a
// round trip per message.
const InlineBodySize = ChunkSize

// FetchOptions says which optional columns FetchMeta reads.
type FetchOptions struct {
	Structure bool // envelope, body structure and part offsets
	Header    bool // the raw top-level header block
	Body      bool // the whole message, when small (MessageMeta.Body)
}

// FetchMeta calls fn for each message of the mailbox whose UID is in uids,
// in ascending UID order, streaming rows (memory does not grow with the
// mailbox). The MessageMeta passed to fn is reused: copy what you keep.
func (s *Store) FetchMeta(ctx context.Context, accountID, mailboxID int64, uids []UIDRange, opts FetchOptions, fn func(*MessageMeta) error) error {
	lo, hi := normalizeRanges(uids)
	structure, header := "NULL::jsonb", "NULL::bytea"
	if opts.Header {
		header = "m.header"
		// The header's size is its stored length, unless it was cut at
		// MaxStoredHeader: then the structure says where the body starts.
		structure = "CASE WHEN octet_length(m.header) >= " + strconv.Itoa(MaxStoredHeader) + " THEN m.structure END"
	}
	if opts.Structure {
		structure = "m.structure"
	}
	body := "NULL::bytea"
	if opts.Body {
		body = `CASE WHEN mm.size <= ` + strconv.Itoa(InlineBodySize) +
			` THEN (SELECT c.data FROM message_chunks c WHERE c.message_id = mm.message_id AND c.seq = 0) END`
	}
	join := ""
	if opts.Structure || opts.Header {
		join = "JOIN messages m ON m.id = mm.message_id"
	}
	rows, err := s.pool.Query(ctx, `SELECT mm.uid, mm.message_id, mm.flags, mm.keywords, mm.modseq, mm.internal_date, mm.size, `+
		structure+`, `+header+`, `+body+` FROM mailbox_messages mm `+join+`
		JOIN unnest($3::bigint[], $4::bigint[]) r(lo, hi) ON mm.uid BETWEEN r.lo AND r.hi
		WHERE mm.mailbox_id = $1 AND mm.account_id = $2 ORDER BY mm.uid`, mailboxID, accountID, lo, hi)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	defer rows.Close()
	var (
		m             MessageMeta
		uid, modseq   int64
		bits          int
		keywords      []string
		structureJSON []byte
	)
	for rows.Next() {
		structureJSON = structureJSON[:0]
		m.Header, m.Body = nil, nil
		if err := rows.Scan(&uid, &m.MessageID, &bits, &keywords, &modseq, &m.InternalDate, &m.Size, &structureJSON, &m.Header, &m.Body); err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		m.UID, m.ModSeq, m.Flags = uint32(uid), uint64(modseq), flagStrings(bits, keywords)
		if m.Body != nil && int64(len(m.Body)) != m.Size {
			m.Body = nil // a short first chunk: read it the long way
		}
		m.Structure = nil
		if len(structureJSON) > 0 {
			m.Structure = new(mimeindex.Message)
			if err := json.Unmarshal(structureJSON, m.Structure); err != nil {
				return fmt.Errorf("fetch: decode structure of message %d: %w", m.MessageID, err)
			}
		}
		m.HeaderSize = 0
		if opts.Header {
			m.HeaderSize = int64(len(m.Header))
			if m.Structure != nil && m.Structure.Root != nil {
				m.HeaderSize = m.Structure.Root.BodyStart
			}
		}
		if !opts.Structure {
			m.Structure = nil
		}
		if err := fn(&m); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	return nil
}

// OpenBody returns a reader of length bytes of a message's raw content
// starting at offset (length < 0: to the end). It fetches one chunk per
// query, so memory stays bounded and no connection is held between reads.
// The message must be in one of the account's mailboxes.
func (s *Store) OpenBody(ctx context.Context, accountID, messageID, offset, length int64) (io.Reader, error) {
	var size int64
	err := s.pool.QueryRow(ctx, `SELECT m.size FROM messages m WHERE m.id = $1
		AND EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.message_id = m.id AND mm.account_id = $2)`,
		messageID, accountID).Scan(&size)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("message %d: %w", messageID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open body: %w", err)
	}
	offset = min(max(offset, 0), size)
	if length < 0 || offset+length > size {
		length = size - offset
	}
	// Checked above: the reader need not check again.
	return &bodyReader{ctx: ctx, s: s, id: messageID, off: offset, end: offset + length}, nil
}

// OpenRange is OpenBody for a range the caller knows lies within the
// message (from its MessageMeta): no read of its size first. Each chunk
// query checks that the message is the account's; a message that is not
// (or a range past its end) fails the read with ErrNotFound.
func (s *Store) OpenRange(ctx context.Context, accountID, messageID, offset, length int64) io.Reader {
	return &bodyReader{ctx: ctx, s: s, id: messageID, account: accountID, off: offset, end: offset + length}
}

type bodyReader struct {
	ctx      context.Context
	s        *Store
	id       int64
	account  int64 // whose mailbox the message must be in; 0: no check
	off, end int64
	buf      []byte
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		if r.off >= r.end {
			return 0, io.EOF
		}
		seq := r.off / ChunkSize
		start := r.off % ChunkSize
		n := min(ChunkSize-start, r.end-r.off)
		// substring is 1-based; fetch only the bytes needed.
		var data []byte
		// account 0: the caller proved the message is the account's, or
		// it is in no mailbox (the outbound queue's).
		err := r.s.pool.QueryRow(r.ctx, `SELECT substring(data FROM $3 FOR $4) FROM message_chunks
			WHERE message_id = $1 AND seq = $2
				AND ($5 = 0 OR EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.message_id = $1 AND mm.account_id = $5))`,
			r.id, seq, start+1, n, r.account).Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			err = ErrNotFound
		}
		if err != nil {
			return 0, fmt.Errorf("read body of message %d: %w", r.id, err)
		}
		if len(data) == 0 {
			return 0, fmt.Errorf("read body of message %d: chunk %d is short", r.id, seq)
		}
		// The account was entitled to the message when its read began:
		// the rest follows even if it is expunged meanwhile (contents do
		// not change), so a response under way is not cut off.
		r.account = 0
		r.buf = data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	r.off += int64(n)
	return n, nil
}

// CountMessageContents returns how many distinct message contents are
// stored, across accounts: tests check deduplication and cleanup with it.
func (s *Store) CountMessageContents(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM messages`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count messages: %w", err)
	}
	return n, nil
}
