package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file is the cross-process change format: the NOTIFY channels, the
// Go type of each notification, the SQL that writes it (every writer
// builds its pg_notify call with these helpers, inside the statement or
// transaction that makes the change) and the decoder the LISTEN
// connection (listen.go) uses. Payloads are plain text, fields separated
// by ASCII spaces.

// The NOTIFY channels. One LISTEN connection per process carries them all
// (listen.go).
const (
	// MailboxChannel announces every change to a mailbox, in the
	// transaction that makes it, as a MailboxChange.
	MailboxChannel = "mailstack_mailbox"
	// LoginChannel announces that logins of an account may no longer be
	// valid, in the transaction that made it so, as a LoginChange:
	// protocol servers end such sessions without checking each command.
	LoginChannel = "mailstack_login"
	// QueueChannel is raised (empty payload) in every transaction that
	// makes outbound mail due, so idle queue workers wake at once.
	QueueChannel = "mailstack_queue"
	// LearnChannel is raised (empty payload) by a MOVE or COPY that
	// queued messages for junk learning, in its transaction, so the
	// learner wakes at once.
	LearnChannel = "mailstack_learn"
)

// listenChannels are the channels of the process's LISTEN connection.
func listenChannels() []string {
	return []string{MailboxChannel, LoginChannel, QueueChannel, LearnChannel}
}

// MailboxChange is a notification on MailboxChannel: something in mailbox
// MailboxID changed and committed, up to ModSeq (0 for deletes and
// renames), at At by the database's clock (for measuring notification lag;
// zero if unknown).
//
// On the wire: "<mailbox id> <modseq> <µs since the epoch>", then, for a
// change small enough to carry (inlineMarker), " + <uidvalidity>" and each
// change: " u <uid> <flag bits> <n> <n keywords>" (a new or changed
// message; keywords never contain spaces) or " x <uid>" (an expunged one).
type MailboxChange struct {
	MailboxID int64
	ModSeq    uint64
	At        time.Time
	// Changes, if not nil, is everything the change did to the mailbox, of
	// UIDVALIDITY UIDValidity: what a read of the changes after ModSeq-1
	// up to ModSeq returns (Updated by ascending UID, Expunged ascending;
	// Mailbox nil). The writers put it in the notification when it is
	// small (a flag change, a delivery, an expunge), so that a reader who
	// has applied ModSeq-1 of that UIDVALIDITY needs no read of its own.
	// Without it, the change is a wake-up only.
	Changes     *Changes
	UIDValidity uint32
}

// LoginChange is a notification on LoginChannel, "<account id> <app
// password id>": logins of the account may have become invalid (an app
// password revoked, the account disabled or deleted).
type LoginChange struct {
	AccountID     int64
	AppPasswordID int64 // 0: every login of the account
}

// Affects reports whether the change may invalidate login l.
func (c *LoginChange) Affects(l *Login) bool {
	return c.AccountID == l.AccountID && (c.AppPasswordID == 0 || c.AppPasswordID == l.AppPasswordID)
}

// inlineMarker begins the inline changes of a payload, after the time
// stamp.
const inlineMarker = "+"

// maxInline bounds the inline part of a payload: PostgreSQL refuses
// payloads of 8,000 bytes or more, which would fail the writer's
// transaction, so a larger change goes as a wake-up only.
const maxInline = 7000

// maxInlineMessages is how many messages a change may touch and still be
// sent inline (the SQL counts them before building the text).
const maxInlineMessages = 200

// mailboxNotifySQL is the pg_notify call of a MailboxChange on the channel
// channel (a parameter), of mailbox mailbox at modseq modseq (SQL
// expressions; modseq '0' for deletes and renames), stamped with the
// database's clock. inline, if not empty, is an SQL text expression of
// the inline part (inlineSQL; NULL: none); past maxInline it is left out.
func mailboxNotifySQL(channel, mailbox, modseq, inline string) string {
	return `pg_notify(` + channel + `, ` + mailboxPayloadSQL(mailbox, modseq, inline) + `)`
}

// mailboxPayloadSQL is the text of mailboxNotifySQL's payload.
func mailboxPayloadSQL(mailbox, modseq, inline string) string {
	payload := mailbox + `::bigint::text || ' ' || ` + modseq + `::bigint::text || ' ' ||
		(extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text`
	if inline != "" {
		payload += ` || CASE WHEN octet_length(` + inline + `) <= ` + strconv.Itoa(maxInline) + ` THEN ` + inline + ` ELSE '' END`
	}
	return payload
}

// inlineSQL is the inline part of a MailboxChange payload: the mailbox's
// uidvalidity, then changes, an SQL text expression of inlineUpdateSQL and
// inlineExpungeSQL terms (NULL makes the whole part NULL: a wake-up).
func inlineSQL(uidvalidity, changes string) string {
	return `' ` + inlineMarker + ` ' || ` + uidvalidity + `::text || ` + changes
}

// inlineUpdateSQL is the inline text of one new or changed message, of
// SQL expressions of its UID, flag bits and keywords (text[]).
func inlineUpdateSQL(uid, bits, keywords string) string {
	return `' u ' || ` + uid + `::text || ' ' || ` + bits + `::int::text || ' ' || coalesce(cardinality(` + keywords +
		`::text[]), 0)::text || ' ' || coalesce(array_to_string(` + keywords + `::text[], ' '), '')`
}

// inlineExpungeSQL is the inline text of one expunged message, of an SQL
// expression of its UID.
func inlineExpungeSQL(uid string) string {
	return `' x ' || ` + uid + `::text`
}

// loginNotifySQL is the pg_notify call of a LoginChange on the channel
// channel (a parameter), of SQL expressions of the account id and the app
// password id ('0': every login of the account).
func loginNotifySQL(channel, account, appPassword string) string {
	return `pg_notify(` + channel + `, ` + loginPayloadSQL(account, appPassword) + `)`
}

// loginPayloadSQL is the text of loginNotifySQL's payload.
func loginPayloadSQL(account, appPassword string) string {
	return account + `::bigint::text || ' ' || ` + appPassword + `::bigint::text`
}

// notifyMailbox announces, in tx, a change to a mailbox up to modseq (0
// for deletes and renames) without inline changes.
func notifyMailbox(ctx context.Context, tx pgx.Tx, mailboxID int64, modseq uint64) error {
	_, err := tx.Exec(ctx, `SELECT `+mailboxNotifySQL("$1", "$2", "$3", ""), MailboxChannel, mailboxID, int64(modseq))
	return err
}

// Wake announces a change to mailbox mailboxID that carries nothing (a
// wake-up, as a delete sends): every process with a session on it reads
// its changes. NOTIFYs reach a listener in commit order, so a process that
// has seen this one has seen every change committed before it: tests use
// Wake, with an id no mailbox has, as a barrier for the change feed.
func (s *Store) Wake(ctx context.Context, mailboxID int64) error {
	if _, err := s.pool.Exec(ctx, `SELECT `+mailboxNotifySQL("$1", "$2", "$3", ""), MailboxChannel, mailboxID, 0); err != nil {
		return fmt.Errorf("wake mailbox %d: %w", mailboxID, err)
	}
	return nil
}

// decodeMailboxChange parses a payload of MailboxChannel,
// "<mailbox id> <modseq> [<µs since the epoch> [+ <uidvalidity> <changes>]]".
// Inline changes that do not parse are dropped: the change is then a
// wake-up, which costs the reader a read but loses nothing.
func decodeMailboxChange(payload string) (MailboxChange, error) {
	// Split on ASCII spaces only: the writers separate with them, and
	// strings.Fields would also split on other (Unicode) spaces.
	f := strings.FieldsFunc(payload, func(r rune) bool { return r == ' ' })
	if len(f) < 2 {
		return MailboxChange{}, errors.New("want mailbox id, modseq and time")
	}
	// Fields after the time stamp other than inline changes are left for
	// later versions: the change is then a wake-up.
	var inline []string
	if len(f) > 3 {
		if f[3] == inlineMarker {
			inline = f[4:]
		}
		f = f[:3]
	}
	var c MailboxChange
	var err error
	if c.MailboxID, err = strconv.ParseInt(f[0], 10, 64); err != nil {
		return MailboxChange{}, err
	}
	if c.ModSeq, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return MailboxChange{}, err
	}
	if len(f) == 3 {
		us, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return MailboxChange{}, err
		}
		c.At = time.UnixMicro(us)
	}
	if inline != nil && c.ModSeq > 0 {
		if ch, uidvalidity, err := decodeInline(inline); err == nil {
			for i := range ch.Updated {
				ch.Updated[i].ModSeq = c.ModSeq
			}
			c.Changes, c.UIDValidity = ch, uidvalidity
		}
	}
	return c, nil
}

// decodeInline parses the inline changes of a payload (inlineMarker).
func decodeInline(f []string) (*Changes, uint32, error) {
	if len(f) == 0 {
		return nil, 0, errors.New("inline change: no uidvalidity")
	}
	uidvalidity, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil || uidvalidity == 0 {
		return nil, 0, fmt.Errorf("inline change: bad uidvalidity: %v", err)
	}
	f = f[1:]
	ch := &Changes{}
	num := func(i int) (int64, error) {
		if i >= len(f) {
			return 0, errors.New("inline change cut short")
		}
		return strconv.ParseInt(f[i], 10, 64)
	}
	for i := 0; i < len(f); {
		uid, err := num(i + 1)
		if err != nil || uid <= 0 || uid > 1<<32-1 {
			return nil, 0, fmt.Errorf("inline change: bad uid: %v", err)
		}
		switch f[i] {
		case "x":
			ch.Expunged = append(ch.Expunged, uint32(uid))
			i += 2
		case "u":
			bits, err := num(i + 2)
			if err != nil {
				return nil, 0, err
			}
			n, err := num(i + 3)
			if err != nil || n < 0 || int(n) > len(f)-(i+4) {
				return nil, 0, fmt.Errorf("inline change: bad keyword count: %v", err)
			}
			kw := f[i+4 : i+4+int(n)]
			ch.Updated = append(ch.Updated, MessageFlags{UID: uint32(uid), Flags: flagStrings(int(bits), kw)})
			i += 4 + int(n)
		default:
			return nil, 0, fmt.Errorf("inline change: unknown kind %q", f[i])
		}
	}
	slices.SortFunc(ch.Updated, func(a, b MessageFlags) int { return cmp.Compare(a.UID, b.UID) })
	slices.Sort(ch.Expunged)
	return ch, uint32(uidvalidity), nil
}

// decodeLoginChange parses a payload of LoginChannel.
func decodeLoginChange(payload string) (*LoginChange, error) {
	a, b, ok := strings.Cut(payload, " ")
	if !ok {
		return nil, errors.New("want account id and app password id")
	}
	var c LoginChange
	var err error
	if c.AccountID, err = strconv.ParseInt(a, 10, 64); err != nil {
		return nil, err
	}
	if c.AppPasswordID, err = strconv.ParseInt(b, 10, 64); err != nil {
		return nil, err
	}
	return &c, nil
}
