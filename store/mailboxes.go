package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Delimiter separates levels of the mailbox hierarchy.
const Delimiter = '/'

// Mailbox is a folder of an account, with its cached counts.
type Mailbox struct {
	ID            int64
	AccountID     int64
	Name          string
	SpecialUse    string // e.g. `\Sent`, or ""
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq uint64
	NoSelect      bool // a placeholder kept for its children
	Messages      int64
	Unseen        int64
	Deleted       int64
	Size          int64
	// FirstRecentUID is the lowest UID no session has claimed as \Recent
	// yet (see ClaimRecent; migration 0007).
	FirstRecentUID uint32
	// Keywords are the keywords ever set on a message of the mailbox
	// (sorted; see migration 0004 and mergeKeywords), for SELECT's FLAGS
	// and PERMANENTFLAGS. Only SelectMailboxByName reads them; elsewhere
	// the field is nil.
	Keywords []string
}

// mailboxColumns are what every reader of a mailbox row needs: LIST,
// STATUS and the change feed read these, SELECT adds the keyword list.
const mailboxColumns = `id, account_id, name, special_use, uidvalidity, uidnext, highestmodseq, noselect,
	messages, unseen, deleted, size, first_recent_uid`

func scanMailbox(r pgx.Row, extra ...any) (*Mailbox, error) {
	var m Mailbox
	var uidvalidity, uidnext, modseq, firstRecent int64
	err := r.Scan(append([]any{&m.ID, &m.AccountID, &m.Name, &m.SpecialUse, &uidvalidity, &uidnext, &modseq, &m.NoSelect,
		&m.Messages, &m.Unseen, &m.Deleted, &m.Size, &firstRecent}, extra...)...)
	m.UIDValidity, m.UIDNext, m.HighestModSeq = uint32(uidvalidity), uint32(uidnext), uint64(modseq)
	m.FirstRecentUID = uint32(firstRecent)
	return &m, err
}

// mergeKeywords is the SQL expression for a mailbox's keyword list with
// the sorted keywords of parameter param added, for the SET clause of the
// UPDATE of the mailbox row that every write of messages makes anyway
// (under its row lock): the list only grows, and a write without new
// keywords, the common case, keeps it with one array comparison.
func mergeKeywords(param string) string {
	return `CASE WHEN ` + param + `::text[] <@ keywords THEN keywords
		ELSE ` + unionKeywords("keywords", param) + ` END`
}

// unionKeywords is the SQL expression for the sorted keyword list of
// array column col with those of parameter param added. Keywords are
// case-insensitive (parseFlags): a keyword col has in another spelling
// is not added again.
func unionKeywords(col, param string) string {
	return `ARRAY(SELECT k FROM (SELECT DISTINCT ON (lower(k)) k
		FROM unnest(` + col + ` || ` + param + `::text[]) WITH ORDINALITY u(k, o) ORDER BY lower(k), o) d ORDER BY k)`
}

// MailboxSnapshot is what SELECT needs of a mailbox, read from one
// snapshot: the mailbox (with its keyword list), the UIDs of its messages
// in ascending order, the lowest UID without \Seen (0: none; IMAP4rev1's
// [UNSEEN n]) and whether a mailbox exists below it (IMAP4rev2's LIST
// response).
type MailboxSnapshot struct {
	Mailbox     *Mailbox
	UIDs        []uint32
	FirstUnseen uint32
	HasChildren bool
}

// maxTombstoneSnapshot is the most tombstones SelectMailboxByName reads
// to stand for a mailbox's UIDs; past it, it reads the live UIDs.
const maxTombstoneSnapshot = 10000

// uidsBesides returns the UIDs from 1 below uidNext that are not in tomb
// (ascending): a mailbox's live UIDs when every other UID has a tombstone.
func uidsBesides(uidNext uint32, tomb []uint32, messages int64) []uint32 {
	out := make([]uint32, 0, messages)
	u := uint32(1)
	for _, t := range tomb {
		for ; u < t; u++ {
			out = append(out, u)
		}
		u = t + 1
	}
	for ; u < uidNext; u++ {
		out = append(out, u)
	}
	return out
}

// SelectMailboxByName reads a MailboxSnapshot of the account's mailbox
// name in one statement, so one round trip and one snapshot whatever the
// size of the mailbox. It fails with ErrNotFound for a missing mailbox and
// ErrNoSelect for a \Noselect placeholder.
func (s *Store) SelectMailboxByName(ctx context.Context, accountID int64, name string) (*MailboxSnapshot, error) {
	n, err := NormalizeMailboxName(name)
	if err != nil {
		return nil, err
	}
	snap := &MailboxSnapshot{}
	var keywords []string
	var uids, tomb []uint32
	var fits bool
	var unseen *int64
	// The mailbox's UIDs in one of two forms. Every UID below UIDNEXT was
	// given to a message, which is live or has a tombstone (expunged), so
	// when there are few tombstones and their number and the live count
	// add up to UIDNEXT-1, the live UIDs are exactly the others: a few
	// tombstones stand for 100,000 UIDs, whose read (an array built from
	// an index-only scan) is most of a large SELECT's time. Otherwise
	// (many tombstones, or some gone with a \Noselect placeholder) the
	// live UIDs are read. The UIDs are those of the account's mailbox row
	// m (invariant 4 holds through it). The first-unseen probe spells the
	// predicate of the partial index mailbox_messages_unseen, as
	// FirstUnseenUID does.
	snap.Mailbox, err = scanMailbox(s.pool.QueryRow(ctx, `SELECT `+mailboxColumns+`, keywords, t.tomb, t.fits,
			CASE WHEN t.fits THEN NULL ELSE
				ARRAY(SELECT mm.uid FROM mailbox_messages mm WHERE mm.mailbox_id = m.id ORDER BY mm.uid) END,
			(SELECT min(mm.uid) FROM mailbox_messages mm WHERE mm.mailbox_id = m.id AND mm.account_id = $1
				AND mm.flags & `+strconv.Itoa(flagSeen)+` = 0),
			EXISTS (SELECT 1 FROM mailboxes c WHERE c.account_id = $1 AND starts_with(c.name, m.name || '/'))
		FROM mailboxes m
		CROSS JOIN LATERAL (SELECT x.tomb, cardinality(x.tomb) <= `+strconv.Itoa(maxTombstoneSnapshot)+`
				AND m.uidnext - 1 - cardinality(x.tomb) = m.messages AS fits
			FROM (SELECT ARRAY(SELECT e.uid FROM expunged e WHERE e.mailbox_id = m.id AND e.uid < m.uidnext
				ORDER BY e.uid LIMIT `+strconv.Itoa(maxTombstoneSnapshot+1)+`) AS tomb) x) t
		WHERE m.account_id = $1 AND m.name = $2`, accountID, n),
		&keywords, &tomb, &fits, &uids, &unseen, &snap.HasChildren)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("mailbox %s: %w", name, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("select mailbox: %w", err)
	case snap.Mailbox.NoSelect:
		return nil, fmt.Errorf("mailbox %s: %w", name, ErrNoSelect)
	}
	if fits {
		uids = uidsBesides(snap.Mailbox.UIDNext, tomb, snap.Mailbox.Messages)
	}
	snap.Mailbox.Keywords, snap.UIDs = keywords, uids
	if unseen != nil {
		snap.FirstUnseen = uint32(*unseen)
	}
	return snap, nil
}

// ClaimRecent claims for the calling session the messages of a mailbox
// that no session has seen as \Recent (RFC 3501 §2.3.2), up to UID upTo:
// if the mailbox's first unclaimed UID is at most upTo, it moves past upTo
// and its old value is returned, and the session owns [first, upTo] as
// recent; otherwise nothing is left to claim and first is 0. upTo is the
// highest UID of the session's view (at SELECT, and again whenever the
// view learns of new messages), so never a UID not yet assigned; one
// above the mailbox's last UID is taken as that one, so that it cannot
// claim messages yet to come. One statement under the mailbox row lock:
// concurrent claims, from any process, never both get a UID. It fails
// with ErrNotFound for a mailbox the account does not have.
func (s *Store) ClaimRecent(ctx context.Context, accountID, mailboxID int64, upTo uint32) (first uint32, err error) {
	// cur: the row's latest version, locked (FOR UPDATE waits for a
	// concurrent claim and then reads what it committed).
	var old int64
	err = s.pool.QueryRow(ctx, `WITH cur AS MATERIALIZED (
			SELECT id, first_recent_uid AS old, LEAST($3::bigint, uidnext - 1) AS up FROM mailboxes
			WHERE id = $2 AND account_id = $1 FOR UPDATE
		), claim AS (
			UPDATE mailboxes m SET first_recent_uid = cur.up + 1 FROM cur
			WHERE m.id = cur.id AND m.account_id = $1 AND cur.old <= cur.up
			RETURNING cur.old
		)
		SELECT coalesce((SELECT old FROM claim), 0) FROM cur`, accountID, mailboxID, int64(upTo)).Scan(&old)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("claim recent: mailbox %d: %w", mailboxID, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("claim recent: %w", err)
	}
	return uint32(old), nil
}

// CountRecent returns how many live messages of the mailbox no session has
// claimed as \Recent yet (STATUS RECENT): one range read of the mailbox's
// primary key from its first unclaimed UID. It fails with ErrNotFound for
// a mailbox the account does not have.
func (s *Store) CountRecent(ctx context.Context, accountID, mailboxID int64) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM mailbox_messages mm
			WHERE mm.mailbox_id = m.id AND mm.account_id = $1 AND mm.uid >= m.first_recent_uid)
		FROM mailboxes m WHERE m.id = $2 AND m.account_id = $1`, accountID, mailboxID).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("count recent: mailbox %d: %w", mailboxID, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("count recent: %w", err)
	}
	return n, nil
}

// MaxMailboxName is the longest mailbox name, in octets, that CREATE and
// RENAME make: names are keys of btree indexes, whose entries PostgreSQL
// caps at 2704 bytes (Dovecot caps names too).
const MaxMailboxName = 1024

var errNameTooLong = fmt.Errorf("%w: mailbox name too long (at most %d octets)", ErrInvalid, MaxMailboxName)

// NormalizeMailboxName canonicalises a mailbox name: INBOX is
// case-insensitive (also as the first level of a hierarchy), and empty
// levels are not allowed.
func NormalizeMailboxName(name string) (string, error) {
	// Names are PostgreSQL text, which refuses bytes that are not UTF-8:
	// such a name names no mailbox, rather than failing the query.
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: mailbox name is not UTF-8", ErrInvalid)
	}
	name = strings.TrimSuffix(name, string(Delimiter))
	if name == "" || strings.HasPrefix(name, string(Delimiter)) || strings.Contains(name, "//") {
		return "", fmt.Errorf("%w: bad mailbox name %q", ErrInvalid, name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("%w: mailbox name has control characters", ErrInvalid)
		}
	}
	first, rest, hasRest := strings.Cut(name, string(Delimiter))
	if strings.EqualFold(first, "INBOX") {
		name = "INBOX"
		if hasRest {
			name += string(Delimiter) + rest
		}
	}
	return name, nil
}

// NewMailboxName returns the name CREATE gives a mailbox asked for as
// name (NormalizeMailboxName), or why no mailbox can have it.
func NewMailboxName(name string) (string, error) {
	name, err := NormalizeMailboxName(name)
	if err != nil {
		return "", err
	}
	if len(name) > MaxMailboxName {
		return "", errNameTooLong
	}
	return name, nil
}

func validSpecialUse(su string) bool {
	switch su {
	case "", `\All`, `\Archive`, `\Drafts`, `\Flagged`, `\Junk`, `\Sent`, `\Trash`:
		return true
	}
	return false
}

// createMailboxTx creates name and any missing parents; if subscribe, name
// (never a parent) is subscribed too. Only the default mailboxes of a new
// account, and the mailbox RENAME INBOX moves INBOX's messages to, are.
func createMailboxTx(ctx context.Context, tx pgx.Tx, accountID int64, name, specialUse string, subscribe bool) (*Mailbox, error) {
	name, err := NewMailboxName(name)
	if err != nil {
		return nil, err
	}
	if !validSpecialUse(specialUse) {
		return nil, fmt.Errorf("%w: unknown special-use attribute %s", ErrInvalid, specialUse)
	}
	// Lock the account row: serialises UIDVALIDITY allocation and
	// hierarchy changes of one account. NO KEY UPDATE, because message
	// writes (which lock a mailbox row first) take KEY SHARE on the account
	// through mailbox_messages' foreign key: FOR UPDATE would deadlock
	// with them.
	if _, err := tx.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE`, accountID); err != nil {
		return nil, err
	}
	levels := strings.Split(name, string(Delimiter))
	var mb *Mailbox
	for i := range levels {
		n := strings.Join(levels[:i+1], string(Delimiter))
		last := i == len(levels)-1
		su := ""
		if last {
			su = specialUse
		}
		existing, err := scanMailbox(tx.QueryRow(ctx, `SELECT `+mailboxColumns+` FROM mailboxes
			WHERE account_id = $1 AND name = $2`, accountID, n))
		switch {
		case err == nil && last && !existing.NoSelect:
			return nil, fmt.Errorf("mailbox %s: %w", n, ErrExists)
		case err == nil && existing.NoSelect && last:
			// Re-creating a \Noselect placeholder makes it a real mailbox.
			if err := subscribeTx(ctx, tx, accountID, n, subscribe); err != nil {
				return nil, err
			}
			return scanMailbox(tx.QueryRow(ctx, `UPDATE mailboxes SET noselect = false, special_use = $2, keywords = '{}',
				uidvalidity = (SELECT uv FROM next_uidvalidity($3) uv) WHERE id = $1 AND account_id = $3 RETURNING `+mailboxColumns,
				existing.ID, su, accountID))
		case err == nil:
			mb = existing
			continue
		case !errors.Is(err, pgx.ErrNoRows):
			return nil, err
		}
		mb, err = scanMailbox(tx.QueryRow(ctx, `INSERT INTO mailboxes (account_id, name, special_use, uidvalidity)
			VALUES ($1, $2, $3, (SELECT uv FROM next_uidvalidity($1) uv)) RETURNING `+mailboxColumns,
			accountID, n, su))
		if err != nil {
			return nil, err
		}
		if err := subscribeTx(ctx, tx, accountID, n, subscribe && last); err != nil {
			return nil, err
		}
	}
	return mb, nil
}

func subscribeTx(ctx context.Context, tx pgx.Tx, accountID int64, name string, subscribe bool) error {
	if !subscribe {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO subscriptions (account_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING`, accountID, name)
	return err
}

// CreateMailbox creates a mailbox, and its missing parents, with an optional
// special-use attribute (RFC 6154). Like Dovecot, it subscribes nothing:
// LSUB and LIST (SUBSCRIBED) show only what a client subscribed (imaptest's
// subscribe and listext scripts expect exactly that). A subscription left
// by a deleted mailbox of the same name still applies.
func (s *Store) CreateMailbox(ctx context.Context, accountID int64, name, specialUse string) (*Mailbox, error) {
	var mb *Mailbox
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		mb, err = createMailboxTx(ctx, tx, accountID, name, specialUse, false)
		return err
	})
	if isUniqueViolation(err) {
		return nil, fmt.Errorf("mailbox %s: %w", name, ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("create mailbox: %w", err)
	}
	return mb, nil
}

// Mailboxes lists every mailbox of the account, ordered by name.
func (s *Store) Mailboxes(ctx context.Context, accountID int64) ([]*Mailbox, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = $1 ORDER BY name`, accountID)
	if err != nil {
		return nil, fmt.Errorf("list mailboxes: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Mailbox, error) { return scanMailbox(r) })
}

// MailboxByName returns one mailbox of the account.
func (s *Store) MailboxByName(ctx context.Context, accountID int64, name string) (*Mailbox, error) {
	n, err := NormalizeMailboxName(name)
	if err != nil {
		return nil, err
	}
	mb, err := scanMailbox(s.pool.QueryRow(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = $1 AND name = $2`,
		accountID, n))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("mailbox %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get mailbox: %w", err)
	}
	return mb, nil
}

// MailboxByID returns one mailbox of the account.
func (s *Store) MailboxByID(ctx context.Context, accountID, id int64) (*Mailbox, error) {
	mb, err := scanMailbox(s.pool.QueryRow(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = $1 AND id = $2`,
		accountID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("mailbox %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get mailbox: %w", err)
	}
	return mb, nil
}

// MailboxBySpecialUse returns the account's mailbox with the attribute (e.g.
// `\Junk`).
func (s *Store) MailboxBySpecialUse(ctx context.Context, accountID int64, specialUse string) (*Mailbox, error) {
	mb, err := scanMailbox(s.pool.QueryRow(ctx, `SELECT `+mailboxColumns+` FROM mailboxes
		WHERE account_id = $1 AND special_use = $2 AND NOT noselect ORDER BY id LIMIT 1`, accountID, specialUse))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("mailbox %s: %w", specialUse, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get mailbox: %w", err)
	}
	return mb, nil
}

// DeleteMailbox deletes a mailbox and its messages (RFC 9051 §6.3.4). INBOX
// cannot be deleted. A mailbox with children loses its messages and becomes
// a \Noselect placeholder; deleting a placeholder that still has children
// fails with ErrHasChildren. Subscriptions are kept (RFC 3501 §6.3.9: the
// server must not remove them unilaterally).
func (s *Store) DeleteMailbox(ctx context.Context, accountID int64, name string) error {
	name, err := NormalizeMailboxName(name)
	if err != nil {
		return err
	}
	if name == "INBOX" {
		return fmt.Errorf("%w: INBOX cannot be deleted", ErrInvalid)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE`, accountID); err != nil {
			return err
		}
		var id int64
		var noselect, children bool
		err := tx.QueryRow(ctx, `SELECT id, noselect, EXISTS (SELECT 1 FROM mailboxes c WHERE c.account_id = $1
				AND starts_with(c.name, m.name || '/'))
			FROM mailboxes m WHERE account_id = $1 AND name = $2 FOR UPDATE`, accountID, name).Scan(&id, &noselect, &children)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("mailbox %s: %w", name, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if children && noselect {
			return fmt.Errorf("mailbox %s: %w", name, ErrHasChildren)
		}
		if children {
			// Keep the row (and so the name) for the children; its messages go.
			if _, err := tx.Exec(ctx, `DELETE FROM mailbox_messages WHERE mailbox_id = $1 AND account_id = $2`, id, accountID); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM expunged WHERE mailbox_id = (SELECT id FROM mailboxes WHERE id = $1 AND account_id = $2)`, id, accountID); err != nil {
				return err
			}
			// Its METADATA goes too, as with the mailbox (a re-created one
			// starts without).
			if _, err := tx.Exec(ctx, `DELETE FROM metadata WHERE mailbox_id = $1 AND account_id = $2`, id, accountID); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE mailboxes SET noselect = true, special_use = '', messages = 0, unseen = 0,
				deleted = 0, size = 0, keywords = '{}', highestmodseq = highestmodseq + 1 WHERE id = $1 AND account_id = $2`, id, accountID)
		} else {
			_, err = tx.Exec(ctx, `DELETE FROM mailboxes WHERE id = $1 AND account_id = $2`, id, accountID)
		}
		if err != nil {
			return err
		}
		return notifyMailbox(ctx, tx, id, 0)
	})
	if err != nil {
		return fmt.Errorf("delete mailbox: %w", err)
	}
	return nil
}

// RenameMailbox renames a mailbox with all its children (RFC 9051 §6.3.6),
// creating missing parents of the new name; the subscriptions of the
// renamed hierarchy move with it, as in Dovecot. Renaming INBOX moves its
// messages to a new mailbox of that name and leaves INBOX (and its
// subscription) in place.
func (s *Store) RenameMailbox(ctx context.Context, accountID int64, oldName, newName string) error {
	oldName, err := NormalizeMailboxName(oldName)
	if err != nil {
		return err
	}
	newName, err = NormalizeMailboxName(newName)
	if err != nil {
		return err
	}
	if newName == "INBOX" || strings.HasPrefix(newName, oldName+string(Delimiter)) || oldName == newName {
		return fmt.Errorf("%w: cannot rename %s to %s", ErrInvalid, oldName, newName)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE`, accountID); err != nil {
			return err
		}
		src, err := scanMailbox(tx.QueryRow(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = $1 AND name = $2`,
			accountID, oldName))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("mailbox %s: %w", oldName, ErrNotFound)
		}
		if err != nil {
			return err
		}
		// Whether newName is taken, and the longest name in the subtree
		// of oldName (its mailboxes and subscriptions): every name the
		// rename makes must fit.
		var exists bool
		var longest int
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2),
				(SELECT coalesce(max(octet_length(name)), 0) FROM (
					SELECT name FROM mailboxes WHERE account_id = $1 AND (name = $3 OR starts_with(name, $3 || '/'))
					UNION ALL
					SELECT name FROM subscriptions WHERE account_id = $1 AND (name = $3 OR starts_with(name, $3 || '/'))) n)`,
			accountID, newName, oldName).Scan(&exists, &longest); err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("mailbox %s: %w", newName, ErrExists)
		}
		if oldName == "INBOX" {
			// Only INBOX's messages move, to a mailbox createMailboxTx checks.
			return renameInbox(ctx, tx, accountID, src, newName)
		}
		if max(longest, len(oldName))-len(oldName)+len(newName) > MaxMailboxName {
			return errNameTooLong
		}
		// Create missing parents of the new name, then move the subtree.
		if parent, _, ok := cutLast(newName); ok {
			var has bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2)`,
				accountID, parent).Scan(&has); err != nil {
				return err
			}
			if !has {
				// Not subscribed, like the parents CREATE makes.
				if _, err := createMailboxTx(ctx, tx, accountID, parent, "", false); err != nil {
					return err
				}
			}
		}
		rows, err := tx.Query(ctx, `UPDATE mailboxes SET name = $3 || substr(name, length($2) + 1),
				highestmodseq = highestmodseq + 1
			WHERE account_id = $1 AND (name = $2 OR starts_with(name, $2 || '/')) RETURNING id`, accountID, oldName, newName)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if err := renameSubscriptionsTx(ctx, tx, accountID, oldName, newName); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT `+mailboxNotifySQL("$1", "id", "0", "")+` FROM unnest($2::bigint[]) id`, MailboxChannel, ids)
		return err
	})
	if isUniqueViolation(err) {
		return fmt.Errorf("rename mailbox: %s: %w", newName, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("rename mailbox: %w", err)
	}
	return nil
}

func cutLast(name string) (parent, leaf string, ok bool) {
	i := strings.LastIndexByte(name, Delimiter)
	if i < 0 {
		return "", name, false
	}
	return name[:i], name[i+1:], true
}

// renameInbox moves every message of INBOX into a new mailbox, keeping
// their flags and order; INBOX keeps its UIDVALIDITY and UIDNEXT. The
// moved messages are not \Recent in the new mailbox: sessions that had
// INBOX selected saw them already, and no session has the new one.
func renameInbox(ctx context.Context, tx pgx.Tx, accountID int64, inbox *Mailbox, newName string) error {
	dst, err := createMailboxTx(ctx, tx, accountID, newName, "", true)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM mailboxes WHERE id = $1 AND account_id = $2 FOR UPDATE`, inbox.ID, accountID); err != nil {
		return err
	}
	if _, err := moveAll(ctx, tx, accountID, inbox.ID, dst.ID); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE mailboxes SET first_recent_uid = uidnext WHERE id = $1 AND account_id = $2`, dst.ID, accountID)
	return err
}

// renameSubscriptionsTx moves the subscriptions of oldName and everything
// below it to newName. A subscription already held under a new name (one
// may exist without its mailbox) is kept, not duplicated.
func renameSubscriptionsTx(ctx context.Context, tx pgx.Tx, accountID int64, oldName, newName string) error {
	rows, err := tx.Query(ctx, `DELETE FROM subscriptions WHERE account_id = $1 AND (name = $2 OR starts_with(name, $2 || '/'))
		RETURNING $3 || substr(name, length($2) + 1)`, accountID, oldName, newName)
	if err != nil {
		return err
	}
	moved, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(moved) == 0 {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO subscriptions (account_id, name) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING`,
		accountID, moved)
	return err
}

// SetSubscribed subscribes to or unsubscribes from a mailbox name
// (SUBSCRIBE, UNSUBSCRIBE). Subscribing needs an existing mailbox (RFC 9051
// lets the server check; Dovecot does), and fails with ErrNotFound
// otherwise. Unsubscribing works whether or not the mailbox exists, so
// that a subscription left by a deleted mailbox can be removed; it fails
// with ErrNotFound only if the name is neither subscribed nor a mailbox.
// Subscribing twice, or unsubscribing an existing mailbox that was not
// subscribed, is not an error.
func (s *Store) SetSubscribed(ctx context.Context, accountID int64, name string, subscribed bool) error {
	n, err := NormalizeMailboxName(name)
	if err != nil {
		return err
	}
	var ok bool
	if subscribed {
		err = s.pool.QueryRow(ctx, `WITH mb AS (SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2),
			ins AS (INSERT INTO subscriptions (account_id, name) SELECT $1, $2 FROM mb ON CONFLICT DO NOTHING)
			SELECT EXISTS (SELECT 1 FROM mb)`, accountID, n).Scan(&ok)
	} else {
		err = s.pool.QueryRow(ctx, `WITH del AS (DELETE FROM subscriptions WHERE account_id = $1 AND name = $2 RETURNING 1)
			SELECT EXISTS (SELECT 1 FROM del) OR EXISTS (SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2)`,
			accountID, n).Scan(&ok)
	}
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if !ok {
		return fmt.Errorf("mailbox %s: %w", name, ErrNotFound)
	}
	return nil
}

// Subscriptions returns the account's subscribed names, sorted. Some may
// name no mailbox (any more).
func (s *Store) Subscriptions(ctx context.Context, accountID int64) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT name FROM subscriptions WHERE account_id = $1 ORDER BY name`, accountID)
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	return names, nil
}
