package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ChunkSize is the size of the rows a message body is stored in: any byte
// range streams with memory bounded by one chunk.
const ChunkSize = 256 << 10

// UIDRange is an inclusive range of UIDs. Stop == 0 means "to the end" (*).
type UIDRange struct{ Start, Stop uint32 }

// normalizeRanges returns sorted, merged, non-overlapping ranges as two
// arrays for SQL (unnest($lo, $hi)); "*" becomes the largest UID.
func normalizeRanges(rs []UIDRange) (lo, hi []int64) {
	type r struct{ a, b int64 }
	list := make([]r, 0, len(rs))
	for _, x := range rs {
		a, b := int64(x.Start), int64(x.Stop)
		if b == 0 {
			b = 1<<32 - 1
		}
		if a == 0 {
			a = 1<<32 - 1
		}
		if a > b {
			a, b = b, a
		}
		list = append(list, r{a, b})
	}
	slices.SortFunc(list, func(x, y r) int { return int(x.a - y.a) })
	for _, x := range list {
		if n := len(hi); n > 0 && x.a <= hi[n-1]+1 {
			hi[n-1] = max(hi[n-1], x.b)
			continue
		}
		lo, hi = append(lo, x.a), append(hi, x.b)
	}
	return lo, hi
}

// Target is one mailbox a message is delivered to.
type Target struct {
	AccountID int64
	MailboxID int64
	// MailboxName, with MailboxID 0, names the mailbox instead: the
	// statement that delivers resolves it. With MailboxID, it must be that
	// mailbox's name (it may have been renamed since the caller looked).
	// A missing or \Noselect mailbox fails the delivery with ErrNotFound.
	MailboxName  string
	Flags        []string
	InternalDate time.Time // zero: now
	// ClaimRecent claims \Recent for the new message (IMAP APPEND into a
	// mailbox the session has selected) when no earlier message of the
	// mailbox is unclaimed (AppendResult.Recent says whether it was).
	ClaimRecent bool
}

// AppendResult says where a delivered message landed.
type AppendResult struct {
	MailboxID   int64
	UIDValidity uint32
	UID         uint32
	ModSeq      uint64
	// Flags are the message's flags as stored (canonical spelling, sorted
	// keywords, no \Recent).
	Flags []string
	// Recent says the delivery claimed \Recent for it (Target.ClaimRecent).
	Recent bool
	// MessageID is the content's id, InternalDate the date it got.
	MessageID    int64
	InternalDate time.Time
}

// storedFlags is how flags that parseFlags accepted are stored and read back.
func storedFlags(flags []string) []string {
	bits, keywords, _ := parseFlags(flags)
	return flagStrings(bits, keywords)
}

// Append stores the message read from r in one mailbox (IMAP APPEND). It
// returns only after the transaction committed.
func (s *Store) Append(ctx context.Context, accountID, mailboxID int64, r io.Reader, maxSize int64, flags []string, date time.Time) (*AppendResult, error) {
	msg, err := Spool(r, maxSize)
	if err != nil {
		return nil, err
	}
	defer msg.Close()
	res, err := s.Deliver(ctx, msg, []Target{{AccountID: accountID, MailboxID: mailboxID, Flags: flags, InternalDate: date}})
	if err != nil {
		return nil, err
	}
	return &res[0], nil
}

// Deliver stores a spooled message once and adds it to every target mailbox
// in one transaction (several local recipients share one copy), which for
// a message of one chunk is a single round trip (storeInOneTrip). Results
// are in the order of targets.
func (s *Store) Deliver(ctx context.Context, msg *Spooled, targets []Target) ([]AppendResult, error) {
	if msg.Size <= ChunkSize && len(targets) > 0 {
		results, fallback, err := s.storeInOneTrip(ctx, nil, msg, targets, nil)
		if !fallback {
			if err != nil {
				return nil, fmt.Errorf("deliver: %w", err)
			}
			return results, nil
		}
	}
	var results []AppendResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		results, err = s.DeliverTx(ctx, tx, msg, targets)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("deliver: %w", err)
	}
	return results, nil
}

// DeliverTx is Deliver inside a caller's transaction (for callers that must
// also queue the message in the same transaction).
func (s *Store) DeliverTx(ctx context.Context, tx pgx.Tx, msg *Spooled, targets []Target) ([]AppendResult, error) {
	msgID, err := insertMessageTx(ctx, tx, msg)
	if err != nil {
		return nil, err
	}
	results := make([]AppendResult, len(targets))
	for _, i := range lockOrder(targets) {
		t := targets[i]
		args, kw, err := deliverArgs(t, msg.Size, msgID)
		if err != nil {
			return nil, err
		}
		var r AppendResult
		err = tx.QueryRow(ctx, deliverSQL("$6", false, kw), args...).Scan(r.scan()...)
		if errors.Is(err, pgx.ErrNoRows) {
			if err := checkQuota(ctx, tx, t.AccountID, msg.Size); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("mailbox %d %q: %w", t.MailboxID, t.MailboxName, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		r.Flags = storedFlags(t.Flags)
		results[i] = r
	}
	return results, nil
}

// lockOrder returns the indexes of targets in mailbox id order, the order
// deliveries lock mailboxes in so that concurrent ones cannot deadlock.
func lockOrder(targets []Target) []int {
	order := make([]int, len(targets))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return int(targets[a].MailboxID - targets[b].MailboxID) })
	return order
}

// deliverArgs are the arguments of deliverSQL for one target; msgID is the
// content id ($6), or its SHA-256 where the statement looks the id up.
// hasKeywords says whether the message has keywords (deliverSQL's third
// argument).
func deliverArgs(t Target, size int64, msgID any) (args []any, hasKeywords bool, err error) {
	bits, keywords, err := parseFlags(t.Flags)
	if err != nil {
		return nil, false, err
	}
	c := countsOf(bits, size)
	date := t.InternalDate
	if date.IsZero() {
		date = time.Now()
	}
	return []any{t.MailboxID, t.AccountID, c.unseen, c.deleted, c.size, msgID, date, bits, keywords, MailboxChannel,
		t.ClaimRecent, t.MailboxName}, len(keywords) > 0, nil
}

// scan is where a row of deliverSQL goes: uidvalidity, uid, modseq, the
// notification, recent, mailbox id, content id, internal date.
func (r *AppendResult) scan() []any {
	return []any{&r.UIDValidity, &r.UID, &r.ModSeq, nil, &r.Recent, &r.MailboxID, &r.MessageID, &r.InternalDate}
}

// deliverSQL is the statement that adds a message to one target mailbox:
// it takes the mailbox row lock while assigning the UID and modseq (and
// adding the message's keywords to the mailbox's list), checks the quota,
// inserts the message and announces the change. msgID is the SQL of the
// content id. A mailbox that is missing, \Noselect or over quota yields no
// row, or, if mustMatch, fails the statement (a NULL uid violates NOT NULL),
// which rolls back a pipelined batch that has no other way to abort.
func deliverSQL(msgID string, mustMatch bool, keywords bool) string {
	from := "mb"
	if mustMatch {
		from = "(SELECT) one LEFT JOIN mb ON true"
	}
	// Without keywords (every delivery from SMTP) the mailbox's list
	// stays as it is; the statement is then smaller to set up.
	merge := "keywords"
	if keywords {
		merge = mergeKeywords("$9")
	}
	// The mailbox is $1 (named $12 unless that is empty), or the one named
	// $12 when $1 is 0. With $11,
	// \Recent is claimed for the new UID (the old uidnext) if it is the
	// first unclaimed one; then first_recent_uid equals the new uidnext.
	return `WITH mb AS (
			UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1,
				messages = messages + 1, unseen = unseen + $3, deleted = deleted + $4, size = size + $5,
				keywords = ` + merge + `,
				first_recent_uid = CASE WHEN $11 AND first_recent_uid = uidnext THEN uidnext + 1 ELSE first_recent_uid END
			WHERE (id = $1 AND ($12 = '' OR name = $12) OR $1 = 0 AND name = $12) AND account_id = $2 AND NOT noselect
			  AND (SELECT a.quota_bytes = 0 OR coalesce((SELECT sum(m.size) FROM mailboxes m WHERE m.account_id = a.id), 0) + $5 <= a.quota_bytes
			       FROM accounts a WHERE a.id = $2)
			RETURNING id, uidvalidity, uidnext - 1 AS uid, highestmodseq, $11 AND first_recent_uid = uidnext AS recent
		), ins AS (
			INSERT INTO mailbox_messages (mailbox_id, uid, message_id, account_id, internal_date, size, flags, keywords, modseq)
			SELECT mb.id, mb.uid, ` + msgID + `, $2, $7, $5, $8, $9, mb.highestmodseq FROM ` + from + `
			RETURNING message_id, internal_date
		)
		SELECT uidvalidity, uid, highestmodseq, ` + mailboxNotifySQL("$10", "id", "highestmodseq", inlineSQL("uidvalidity", inlineUpdateSQL("uid", "$8", "$9"))) + `,
			recent, id, ins.message_id, ins.internal_date FROM mb, ins`
}

func checkQuota(ctx context.Context, tx pgx.Tx, accountID, size int64) error {
	var over bool
	err := tx.QueryRow(ctx, `SELECT a.quota_bytes > 0 AND
			coalesce((SELECT sum(m.size) FROM mailboxes m WHERE m.account_id = a.id), 0) + $2 > a.quota_bytes
		FROM accounts a WHERE a.id = $1`, accountID, size).Scan(&over)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("account %d: %w", accountID, ErrNotFound)
	}
	if err != nil {
		return err
	}
	if over {
		return ErrOverQuota
	}
	return nil
}

// insertMessageTx stores the message content once per SHA-256 and returns
// its id. An existing row is locked FOR KEY SHARE so garbage collection
// cannot remove it before this transaction references it. A message that
// fits one chunk (the common case) costs one round trip.
func insertMessageTx(ctx context.Context, tx pgx.Tx, msg *Spooled) (int64, error) {
	return insertMessageTxAttempt(ctx, tx, msg, 0)
}

func insertMessageTxAttempt(ctx context.Context, tx pgx.Tx, msg *Spooled, attempt int) (int64, error) {
	header, structure, err := messageMeta(msg)
	if err != nil {
		return 0, err
	}
	keys := sortKeyArgs(msg, header)
	r := msg.Reader()
	buf := make([]byte, min(msg.Size, ChunkSize))
	n, err := io.ReadFull(r, buf)
	if err != nil && err != io.EOF {
		return 0, fmt.Errorf("read spooled message: %w", err)
	}
	// ON CONFLICT waits for a concurrent insert of the same content; if that
	// one commits, we use its row (below).
	var id int64
	err = tx.QueryRow(ctx, insertMessageSQL(false), msg.SHA256[:], msg.Size, header, structure, buf[:n], keys[0], keys[1], keys[2]).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		// Another transaction has (or had) this content. Lock it; if
		// garbage collection deleted it meanwhile, insert it after all.
		err = tx.QueryRow(ctx, `SELECT id FROM messages WHERE sha256 = $1 FOR KEY SHARE`, msg.SHA256[:]).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) && attempt < 3 {
			return insertMessageTxAttempt(ctx, tx, msg, attempt+1)
		}
		return id, err
	}
	if err != nil {
		return 0, err
	}
	if msg.Size <= ChunkSize {
		return id, nil
	}
	// Stream the rest into chunk rows: one chunk in memory at a time.
	seq := 1
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"message_chunks"}, []string{"message_id", "seq", "data"},
		pgx.CopyFromFunc(func() ([]any, error) {
			n, err := io.ReadFull(r, buf)
			if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
				return nil, nil
			}
			if err != nil && err != io.ErrUnexpectedEOF {
				return nil, err
			}
			seq++
			return []any{id, seq - 1, buf[:n]}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("store body: %w", err)
	}
	return id, nil
}

// insertMessageSQL stores a message's content, its sort keys ($6-$8,
// sortKeyArgs) and its first chunk unless
// the content (sha256) is stored already, and returns the new id. With
// loginCheck it first checks a login ($9: account id, $10: app password id)
// and fails unless it is still valid (login_gone, migration 6): a check
// without a statement, or a round trip, of its own.
func insertMessageSQL(loginCheck bool) string {
	cond := "true"
	if loginCheck {
		cond = `CASE WHEN ` + sessionValid("$9", "$10") + ` THEN true ELSE login_gone() END`
	}
	return `WITH m AS (
		INSERT INTO messages (sha256, size, header, structure) SELECT $1, $2, $3, $4 WHERE ` + cond + `
		ON CONFLICT (sha256) DO NOTHING RETURNING id
	), k AS (
		` + insertSortKeys("m", "$6", "$7", "$8") + `
	), c AS (
		INSERT INTO message_chunks (message_id, seq, data) SELECT id, 0, $5 FROM m WHERE $2 > 0
	)
	SELECT id FROM m`
}

// messageMeta returns the stored header and the encoded structure of msg.
func messageMeta(msg *Spooled) (header, structure []byte, err error) {
	if header, err = msg.Header(); err != nil {
		return nil, nil, err
	}
	if structure, err = json.Marshal(msg.Structure); err != nil {
		return nil, nil, fmt.Errorf("encode structure: %w", err)
	}
	return header, structure, nil
}

// lockMailbox locks a selectable mailbox row of the account for the rest of
// the transaction and returns its uidnext and highestmodseq.
func lockMailbox(ctx context.Context, tx pgx.Tx, accountID, mailboxID int64) (uidnext, modseq int64, err error) {
	err = tx.QueryRow(ctx, `SELECT uidnext, highestmodseq FROM mailboxes
		WHERE id = $1 AND account_id = $2 AND NOT noselect FOR UPDATE`, mailboxID, accountID).Scan(&uidnext, &modseq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
	}
	return uidnext, modseq, err
}

// updateMailbox applies counter changes, sets new uidnext and modseq and
// adds keywords (those the change gave messages; nil if none) to the
// mailbox's keyword list.
func updateMailbox(ctx context.Context, tx pgx.Tx, accountID, mailboxID, uidnext, modseq int64, c counts, keywords []string) error {
	if keywords == nil {
		keywords = []string{} // NULL would make mergeKeywords rebuild the list
	}
	if _, err := tx.Exec(ctx, `UPDATE mailboxes SET uidnext = $2, highestmodseq = $3, messages = messages + $4,
			unseen = unseen + $5, deleted = deleted + $6, size = size + $7, keywords = `+mergeKeywords("$9")+`
		WHERE id = $1 AND account_id = $8`,
		mailboxID, uidnext, modseq, c.messages, c.unseen, c.deleted, c.size, accountID, keywords); err != nil {
		return err
	}
	return notifyMailbox(ctx, tx, mailboxID, uint64(modseq))
}

// keywordSet collects the keywords of many messages for updateMailbox.
type keywordSet map[string]struct{}

func (ks keywordSet) add(keywords []string) {
	for _, k := range keywords {
		ks[k] = struct{}{}
	}
}

func (ks keywordSet) list() []string { return slices.Sorted(maps.Keys(ks)) }

// CopyResult maps source UIDs to the UIDs of the copies (RFC 4315 COPYUID).
type CopyResult struct {
	UIDValidity uint32 // of the destination
	SrcUIDs     []uint32
	DstUIDs     []uint32
}

// Copy copies the messages with the given UIDs to another mailbox of the
// same account, keeping flags and internal dates.
func (s *Store) Copy(ctx context.Context, accountID, srcID int64, uids []UIDRange, dstID int64) (*CopyResult, error) {
	var res *CopyResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		res, err = copyTx(ctx, tx, accountID, srcID, uids, dstID, false, s.opts.LearnJunk)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	return res, nil
}

// Move moves messages to another mailbox of the same account atomically
// (RFC 6851): the copies and the source expunges commit together. Moving
// into the mailbox the messages are in works as in Dovecot: they get new
// UIDs there, as by a COPY and an EXPUNGE of the originals, in one change
// (one modseq step, one notification), and the result maps the old UIDs to
// the new.
func (s *Store) Move(ctx context.Context, accountID, srcID int64, uids []UIDRange, dstID int64) (*CopyResult, error) {
	var res *CopyResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		res, err = copyTx(ctx, tx, accountID, srcID, uids, dstID, true, s.opts.LearnJunk)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("move: %w", err)
	}
	return res, nil
}

func moveAll(ctx context.Context, tx pgx.Tx, accountID, srcID, dstID int64) (*CopyResult, error) {
	return copyTx(ctx, tx, accountID, srcID, []UIDRange{{1, 0}}, dstID, true, false)
}

// copyTx copies (or moves) messages between two mailboxes of the account.
// With learn, a copy into or out of \Junk also queues the messages for
// rspamd's learning (junk.go), in the same transaction.
func copyTx(ctx context.Context, tx pgx.Tx, accountID, srcID int64, uids []UIDRange, dstID int64, move, learn bool) (*CopyResult, error) {
	// Lock both mailboxes in id order (deadlock freedom).
	first, second := srcID, dstID
	if first > second {
		first, second = second, first
	}
	locked := map[int64][2]int64{}
	for _, id := range []int64{first, second} {
		if _, ok := locked[id]; ok {
			continue
		}
		uidnext, modseq, err := lockMailbox(ctx, tx, accountID, id)
		if err != nil {
			return nil, err
		}
		locked[id] = [2]int64{uidnext, modseq}
	}
	var uidvalidity int64
	var srcUse, dstUse string
	if err := tx.QueryRow(ctx, `SELECT uidvalidity, special_use,
			(SELECT special_use FROM mailboxes WHERE id = $3 AND account_id = $2)
		FROM mailboxes WHERE id = $1 AND account_id = $2`, dstID, accountID, srcID).Scan(&uidvalidity, &dstUse, &srcUse); err != nil {
		return nil, err
	}
	spam, learn := learnDirection(srcUse, dstUse, learn)
	dstNext, dstModseq := locked[dstID][0], locked[dstID][1]+1
	lo, hi := normalizeRanges(uids)
	rows, err := tx.Query(ctx, `WITH src AS (
			SELECT mm.uid, mm.message_id, mm.internal_date, mm.size, mm.flags, mm.keywords,
				row_number() OVER (ORDER BY mm.uid) - 1 AS n
			FROM mailbox_messages mm JOIN unnest($3::bigint[], $4::bigint[]) r(lo, hi) ON mm.uid BETWEEN r.lo AND r.hi
			WHERE mm.mailbox_id = $1 AND mm.account_id = $2
		), ins AS (
			INSERT INTO mailbox_messages (mailbox_id, uid, message_id, account_id, internal_date, size, flags, keywords, modseq)
			SELECT $5, $6 + src.n, src.message_id, $2, src.internal_date, src.size, src.flags, src.keywords, $7 FROM src
			RETURNING uid
		)
		SELECT src.uid, ins.uid, src.flags, src.size, src.keywords, src.message_id FROM ins JOIN src ON ins.uid = $6 + src.n ORDER BY src.uid`,
		srcID, accountID, lo, hi, dstID, dstNext, dstModseq)
	if err != nil {
		return nil, err
	}
	res := &CopyResult{UIDValidity: uint32(uidvalidity)}
	var c counts
	keywords := keywordSet{}
	var kw []string
	var learnIDs []int64
	for rows.Next() {
		var su, du, size, msgID int64
		var bits int
		if err := rows.Scan(&su, &du, &bits, &size, &kw, &msgID); err != nil {
			return nil, err
		}
		if learn {
			learnIDs = append(learnIDs, msgID)
		}
		res.SrcUIDs = append(res.SrcUIDs, uint32(su))
		res.DstUIDs = append(res.DstUIDs, uint32(du))
		c.add(countsOf(bits, size))
		keywords.add(kw)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(res.SrcUIDs) == 0 {
		return res, nil
	}
	if !move {
		if err := checkQuota(ctx, tx, accountID, c.size); err != nil {
			return nil, err
		}
	}
	var srcUIDs []int64
	if move {
		srcUIDs = uidArray(res.SrcUIDs)
	}
	if move && srcID == dstID {
		// A move within the mailbox is one change: the originals go at
		// the copies' modseq, and one update of the row takes both.
		gone, err := removeMessages(ctx, tx, accountID, srcID, dstModseq, srcUIDs)
		if err != nil {
			return nil, err
		}
		c.add(gone)
	}
	if err := updateMailbox(ctx, tx, accountID, dstID, dstNext+int64(len(res.DstUIDs)), dstModseq, c, keywords.list()); err != nil {
		return nil, err
	}
	if move && srcID != dstID {
		if _, err := expungeTx(ctx, tx, accountID, srcID, locked[srcID][0], locked[srcID][1], srcUIDs); err != nil {
			return nil, err
		}
	}
	if learn {
		if err := queueLearnTx(ctx, tx, accountID, learnIDs, spam); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// expungeTx removes the given UIDs (all of which must exist) from a locked
// mailbox, leaving tombstones, and returns the new modseq.
func expungeTx(ctx context.Context, tx pgx.Tx, accountID, mailboxID, uidnext, modseq int64, uids []int64) (int64, error) {
	modseq++
	c, err := removeMessages(ctx, tx, accountID, mailboxID, modseq, uids)
	if err != nil {
		return 0, err
	}
	return modseq, updateMailbox(ctx, tx, accountID, mailboxID, uidnext, modseq, c, nil)
}

// removeMessages deletes the given UIDs of a locked mailbox, leaving
// tombstones at modseq, and returns the (negative) change to the
// mailbox's counts; the caller updates the mailbox row.
func removeMessages(ctx context.Context, tx pgx.Tx, accountID, mailboxID, modseq int64, uids []int64) (counts, error) {
	var c counts
	rows, err := tx.Query(ctx, `DELETE FROM mailbox_messages WHERE mailbox_id = $1 AND account_id = $2 AND uid = ANY($3)
		RETURNING flags, size`, mailboxID, accountID, uids)
	if err != nil {
		return c, err
	}
	var bits int
	var size int64
	_, err = pgx.ForEachRow(rows, []any{&bits, &size}, func() error {
		c.sub(countsOf(bits, size))
		return nil
	})
	if err != nil {
		return c, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO expunged (mailbox_id, uid, modseq) SELECT $1, u, $3 FROM unnest($2::bigint[]) u
		ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = EXCLUDED.modseq`, mailboxID, uids, modseq)
	return c, err
}

// Expunged is what an expunge did to a mailbox of UIDVALIDITY UIDValidity:
// the UIDs it removed, ascending, at ModSeq (0 when it removed nothing).
type Expunged struct {
	UIDs        []uint32
	ModSeq      uint64
	UIDValidity uint32
}

// Expunge permanently removes the messages flagged \Deleted, all of them or
// (uids != nil, UID EXPUNGE) only those in uids. One statement, its own
// transaction: it locks the mailbox row (lk), deletes the flagged messages
// of the set (a message whose flags changed while lk waited is judged by
// its latest version), leaves tombstones, updates the mailbox's modseq and
// counts and announces the change with the expunged UIDs inline (see
// MailboxChange.Changes), unless nothing was removed. The rows: kind 0, the
// mailbox was found; 1, an expunged UID; 2, the new modseq.
func (s *Store) Expunge(ctx context.Context, accountID, mailboxID int64, uids []UIDRange) (*Expunged, error) {
	if uids == nil {
		uids = []UIDRange{{1, 0}}
	}
	lo, hi := normalizeRanges(uids)
	rows, err := s.pool.Query(ctx, `WITH mb0 AS MATERIALIZED (
			SELECT uidvalidity, deleted FROM mailboxes WHERE id = $1 AND account_id = $2 AND NOT noselect
		), lk AS MATERIALIZED (
			-- Nothing to remove (the cached count says no message has
			-- \Deleted, as it does after most EXPUNGEs): no lock, no
			-- write, no WAL flush. A message flagged meanwhile is judged
			-- by the next EXPUNGE, as if this one came first.
			SELECT highestmodseq + 1 AS ms FROM mailboxes
			WHERE id = $1 AND account_id = $2 AND NOT noselect AND (SELECT deleted FROM mb0) > 0 FOR UPDATE
		), del AS (
			-- (SELECT ... FROM lk) is evaluated, and the lock taken, before
			-- any row is deleted.
			DELETE FROM mailbox_messages mm USING unnest($3::bigint[], $4::bigint[]) r(lo, hi)
			WHERE (SELECT true FROM lk) AND mm.mailbox_id = $1 AND mm.account_id = $2
				AND mm.uid BETWEEN r.lo AND r.hi AND mm.flags & $5 <> 0
			RETURNING mm.uid, mm.flags, mm.size
		), tomb AS (
			INSERT INTO expunged (mailbox_id, uid, modseq) SELECT $1, del.uid, lk.ms FROM del, lk
			ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = EXCLUDED.modseq
		), mb AS (
			UPDATE mailboxes m SET highestmodseq = lk.ms, messages = m.messages - d.n, unseen = m.unseen - d.u,
				deleted = m.deleted - d.n, size = m.size - d.sz
			FROM lk, (SELECT count(*) AS n, count(*) FILTER (WHERE flags & $6 = 0) AS u,
					coalesce(sum(size), 0) AS sz FROM del) d
			WHERE m.id = $1 AND m.account_id = $2 AND d.n > 0
			RETURNING m.highestmodseq
		), inl AS (
			SELECT CASE WHEN (SELECT count(*) FROM del) <= `+strconv.Itoa(maxInlineMessages)+` THEN
				`+inlineSQL("(SELECT uidvalidity FROM mb0)", "(SELECT string_agg("+inlineExpungeSQL("uid")+", '') FROM del)")+` END AS s
		)
		SELECT 0 AS kind, 0::bigint, uidvalidity::bigint`+asyncCommit+` FROM mb0
		UNION ALL
		SELECT 1, uid, 0, NULL FROM del
		UNION ALL
		SELECT 2, highestmodseq, 0, `+mailboxNotifySQL("$7", "$1", "highestmodseq", "inl.s")+`::text FROM mb, inl`,
		mailboxID, accountID, lo, hi, flagDeleted, flagSeen, MailboxChannel)
	if err != nil {
		return nil, fmt.Errorf("expunge: %w", err)
	}
	res := &Expunged{}
	found := false
	var kind int
	var a, b int64
	_, err = pgx.ForEachRow(rows, []any{&kind, &a, &b, nil}, func() error {
		switch kind {
		case 0:
			found, res.UIDValidity = true, uint32(b)
		case 1:
			res.UIDs = append(res.UIDs, uint32(a))
		case 2:
			res.ModSeq = uint64(a)
		}
		return nil
	})
	if err == nil && !found {
		err = fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("expunge: %w", err)
	}
	slices.Sort(res.UIDs)
	return res, nil
}

// FlagOp says how StoreFlags combines the given flags with a message's.
type FlagOp int

// Flag operations (IMAP STORE +FLAGS, -FLAGS, FLAGS).
const (
	FlagsAdd FlagOp = iota
	FlagsRemove
	FlagsReplace
)

// MessageFlags is a message's flag state after a change.
type MessageFlags struct {
	UID    uint32
	Flags  []string
	ModSeq uint64
}

// StoreFlags changes the flags of the messages with the given UIDs and
// returns the new state of each message that actually changed, in UID
// order. Messages whose flags already matched keep their modseq.
func (s *Store) StoreFlags(ctx context.Context, accountID, mailboxID int64, uids []UIDRange, op FlagOp, flags []string) ([]MessageFlags, error) {
	changed, _, err := s.storeFlags(ctx, accountID, mailboxID, uids, op, flags, nil)
	return changed, err
}

// StoreFlagsUnchangedSince is StoreFlags for the messages whose modseq is
// at most unchangedSince only (RFC 7162 §3.1.3, STORE UNCHANGEDSINCE),
// tested and changed atomically under the mailbox lock. It also returns
// the UIDs of the messages of the set that failed the test, ascending.
func (s *Store) StoreFlagsUnchangedSince(ctx context.Context, accountID, mailboxID int64, uids []UIDRange, op FlagOp, flags []string, unchangedSince uint64) (changed []MessageFlags, modified []uint32, err error) {
	ms := int64(min(unchangedSince, 1<<63-1))
	return s.storeFlags(ctx, accountID, mailboxID, uids, op, flags, &ms)
}

func (s *Store) storeFlags(ctx context.Context, accountID, mailboxID int64, uids []UIDRange, op FlagOp, flags []string, unchangedSince *int64) ([]MessageFlags, []uint32, error) {
	bits, keywords, err := parseFlags(flags)
	if err != nil {
		return nil, nil, err
	}
	// Only adding and replacing give messages keywords; the mailbox's
	// list keeps removed ones (it only grows).
	added := []string{}
	if op != FlagsRemove {
		added = keywords
	}
	// One round trip, one transaction: a pipelined batch of two
	// statements that PostgreSQL runs up to its one Sync as one implicit
	// transaction. The first locks the mailbox row (every writer of the
	// mailbox does, first); the second, whose snapshot is taken after the
	// lock was granted, so it sees every change committed before it,
	// reads the messages of the set without locking them one by one,
	// updates those whose flags change with the next modseq, and only if
	// any did, gives the mailbox that modseq and the new counts and
	// announces it. Its rows: kind 0, the mailbox was found; 1, a changed
	// message; 2, the notification.
	lo, hi := normalizeRanges(uids)
	b := &pgx.Batch{}
	b.Queue(`SELECT 1`+asyncCommit+` FROM mailboxes WHERE id = $1 AND account_id = $2 AND NOT noselect FOR UPDATE`, mailboxID, accountID)
	b.Queue(`WITH lk AS MATERIALIZED (
			SELECT highestmodseq + 1 AS ms, uidvalidity FROM mailboxes
			WHERE id = $1 AND account_id = $2 AND NOT noselect
		), old AS MATERIALIZED (
			SELECT mm.uid, mm.flags, mm.keywords, mm.modseq AS oms, lk.ms FROM lk, mailbox_messages mm
			JOIN unnest($3::bigint[], $4::bigint[]) r(lo, hi) ON mm.uid BETWEEN r.lo AND r.hi
			WHERE mm.mailbox_id = $1 AND mm.account_id = $2
		), new AS (
			SELECT uid, ms, flags AS oflags,
				CASE $5::int WHEN 0 THEN flags | $6 WHEN 1 THEN flags & ~$6::int ELSE $6 END AS nflags,
				-- Most changes are of system flags only: no work on
				-- keywords then (CASE evaluates only what it picks).
				CASE WHEN $5::int <> 2 AND cardinality($7::text[]) = 0 THEN keywords
					-- Keywords are case-insensitive: one the message has
					-- keeps its spelling.
					WHEN $5::int = 0 THEN `+unionKeywords("keywords", "$7")+`
					WHEN $5::int = 1 THEN ARRAY(SELECT k FROM unnest(keywords) k
						WHERE NOT lower(k) = ANY($13::text[]) ORDER BY k)
					ELSE $7::text[] END AS nkeywords,
				keywords AS okeywords
			FROM old WHERE $12::bigint IS NULL OR oms <= $12
		), upd AS (
			UPDATE mailbox_messages mm SET flags = new.nflags, keywords = new.nkeywords, modseq = new.ms
			FROM new WHERE mm.mailbox_id = $1 AND mm.account_id = $2 AND mm.uid = new.uid
				AND (new.nflags <> new.oflags OR new.nkeywords <> new.okeywords)
			RETURNING mm.uid, new.oflags, mm.flags, mm.keywords, mm.modseq
		), mb AS (
			UPDATE mailboxes m SET highestmodseq = lk.ms,
				unseen = m.unseen + d.du, deleted = m.deleted + d.dd, keywords = `+mergeKeywords("$8")+`
			FROM lk, (SELECT
					coalesce(sum((flags & $9 = 0)::int - (oflags & $9 = 0)::int), 0) AS du,
					coalesce(sum((flags & $10 <> 0)::int - (oflags & $10 <> 0)::int), 0) AS dd
				FROM upd) d
			WHERE m.id = $1 AND m.account_id = $2 AND EXISTS (SELECT 1 FROM upd)
			RETURNING m.highestmodseq
		), inl AS (
			-- The change inline (see MailboxChange.Changes), unless large.
			SELECT CASE WHEN (SELECT count(*) FROM upd) <= `+strconv.Itoa(maxInlineMessages)+` THEN (SELECT `+
		inlineSQL("(SELECT uidvalidity FROM lk)", "string_agg("+inlineUpdateSQL("uid", "flags", "keywords")+", '')")+`
				FROM upd) END AS s
		)
		SELECT 0 AS kind, 0::bigint, 0, NULL::text[], ms, NULL::text FROM lk
		UNION ALL
		SELECT 1, uid, flags, keywords, modseq, NULL FROM upd
		UNION ALL
		SELECT 3, uid, 0, NULL, oms, NULL FROM old WHERE oms > $12
		UNION ALL
		SELECT 2, 0, 0, NULL, highestmodseq,
			`+mailboxNotifySQL("$11", "$1", "highestmodseq", "inl.s")+`::text FROM mb, inl`,
		mailboxID, accountID, lo, hi, int(op), bits, keywords, added, flagSeen, flagDeleted, MailboxChannel, unchangedSince,
		lowered(keywords))
	br := s.pool.SendBatch(ctx, b)
	out, modified, err := readStoreFlags(br, mailboxID)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("store flags: %w", err)
	}
	return out, modified, nil
}

// lowered returns the keywords lowercased: -FLAGS removes a keyword in
// any spelling (keywords are case-insensitive, parseFlags).
func lowered(keywords []string) []string {
	out := make([]string, len(keywords))
	for i, k := range keywords {
		out[i] = strings.ToLower(k)
	}
	return out
}

// asyncCommit, added to the columns of a SELECT of a transaction, lets it commit without
// waiting for its WAL to reach the disk (synchronous_commit off, for that
// transaction only). Flag changes and expunges use it, as Dovecot's
// default does not fsync them either: a crash of PostgreSQL or of the
// machine may lose the last fraction of a second of them (a message shows
// unread again, or comes back), never a message; deliveries, APPEND,
// COPY and MOVE still wait for the disk. PostgreSQL keeps the database
// consistent either way. (ARCHITECTURE.md, invariant 3.)
const asyncCommit = `, set_config('synchronous_commit', 'off', true)`

// readStoreFlags reads StoreFlags' batch: the lock, then the changes.
func readStoreFlags(br pgx.BatchResults, mailboxID int64) ([]MessageFlags, []uint32, error) {
	if _, err := br.Exec(); err != nil {
		return nil, nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, nil, err
	}
	var out []MessageFlags
	var modified []uint32
	found := false
	var kind, nflags int
	var uid, modseq int64
	var kw []string
	_, err = pgx.ForEachRow(rows, []any{&kind, &uid, &nflags, &kw, &modseq, nil}, func() error {
		switch kind {
		case 0:
			found = true
		case 1:
			out = append(out, MessageFlags{UID: uint32(uid), Flags: flagStrings(nflags, kw), ModSeq: uint64(modseq)})
		case 3:
			modified = append(modified, uint32(uid))
		}
		return nil
	})
	if err == nil && !found {
		err = fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
	}
	slices.SortFunc(out, func(a, b MessageFlags) int { return int(a.UID) - int(b.UID) })
	slices.Sort(modified)
	return out, modified, err
}
