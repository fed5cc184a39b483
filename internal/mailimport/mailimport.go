// Package mailimport moves mail into and out of an account: from any IMAP
// server (iCloud, Gmail, Dovecot, ...), from mbox files and Maildirs, and
// out again to mbox or Maildir.
//
// Every import writes through the store's bulk path (store.ImportAppend):
// a batch of messages commits in one transaction, so nothing is ever half
// stored, and an IMAP import's position per source folder commits with
// the messages it covers, so a run cut off anywhere and started again
// copies each message exactly once. Messages stream through spools (in
// memory up to 1 MiB, else a temporary file): memory stays bounded
// whatever the size of a mailbox or a message. A message that cannot be
// read or stored is recorded in the Summary and the rest goes on.
package mailimport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mailstack/mailstack/store"
)

// Defaults of Importer's limits.
const (
	DefaultBatchMessages  = 1000
	DefaultBatchBytes     = 8 << 20
	DefaultMaxMessageSize = 256 << 20
)

// Importer imports mail into one account.
type Importer struct {
	Store   *store.Store
	Account *store.Account
	// Log receives retries and failures; nil: discarded.
	Log *slog.Logger
	// Progress reports what is copied; nil: nothing is reported.
	Progress *Progress
	// BatchMessages and BatchBytes bound one transaction (and what is
	// held in spools at a time); zero: the defaults.
	BatchMessages int
	BatchBytes    int64
	// MaxMessageSize: a larger message is recorded as failed; zero: the
	// default.
	MaxMessageSize int64

	// afterCommit, if set, runs after each batch commits (tests).
	afterCommit func()

	mu        sync.Mutex
	mailboxes map[string]*store.Mailbox // by target name
	summary   Summary
}

// Summary is what an import did.
type Summary struct {
	Copied     int64 // messages stored
	Bytes      int64 // their size
	Duplicates int64 // skipped: the target already held the same content
	Failed     []Failure
	Skipped    []string // source folders left out, with why
}

// Failure is one message that was not imported.
type Failure struct {
	Folder string // at the source
	ID     string // UID at an IMAP source, else the file and position
	Reason string
}

func (f Failure) String() string { return fmt.Sprintf("%s %s: %s", f.Folder, f.ID, f.Reason) }

// Summary returns a copy of what the importer did so far.
func (im *Importer) Summary() Summary {
	im.mu.Lock()
	defer im.mu.Unlock()
	s := im.summary
	s.Failed = append([]Failure(nil), s.Failed...)
	s.Skipped = append([]string(nil), s.Skipped...)
	return s
}

func (im *Importer) fail(folder, id, reason string) {
	im.mu.Lock()
	im.summary.Failed = append(im.summary.Failed, Failure{Folder: folder, ID: id, Reason: reason})
	im.mu.Unlock()
	im.log().Warn("message not imported", "folder", folder, "id", id, "reason", reason)
}

func (im *Importer) skipFolder(folder, why string) {
	im.mu.Lock()
	im.summary.Skipped = append(im.summary.Skipped, folder+": "+why)
	im.mu.Unlock()
}

func (im *Importer) log() *slog.Logger {
	if im.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return im.Log
}

func (im *Importer) batchMessages() int {
	if im.BatchMessages > 0 {
		return im.BatchMessages
	}
	return DefaultBatchMessages
}

func (im *Importer) batchBytes() int64 {
	if im.BatchBytes > 0 {
		return im.BatchBytes
	}
	return DefaultBatchBytes
}

func (im *Importer) maxMessageSize() int64 {
	if im.MaxMessageSize > 0 {
		return im.MaxMessageSize
	}
	return DefaultMaxMessageSize
}

// message is one message on its way into a batch.
type message struct {
	id    string
	msg   *store.Spooled
	flags []string
	date  time.Time
}

// spool reads one message from a file source; a message that cannot be
// read whole (too big, a read error) is recorded as failed and nil
// returned.
func (im *Importer) spool(folder, id string, r io.Reader) *store.Spooled {
	sp, err := store.Spool(r, im.maxMessageSize())
	if err != nil {
		im.fail(folder, id, spoolFailure(err, im.maxMessageSize()))
		return nil
	}
	return sp
}

// spoolFailure says why a message could not be read.
func spoolFailure(err error, limit int64) string {
	if errors.Is(err, store.ErrTooBig) {
		return fmt.Sprintf("larger than the limit of %d bytes", limit)
	}
	return err.Error()
}

// cleanFlags keeps the flags the store can hold: \Recent and unknown
// system flags or keywords that are not atoms are dropped, not fatal.
func cleanFlags(flags []string) []string {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		if !strings.EqualFold(f, `\Recent`) && store.ValidFlag(f) {
			out = append(out, f)
		}
	}
	return out
}

// mailbox returns the target mailbox name, creating it (and its parents)
// if missing. specialUse finds the account's mailbox of that use first
// (\Sent is "Sent" in a new account, but a user may have renamed it).
func (im *Importer) mailbox(ctx context.Context, name, specialUse string) (*store.Mailbox, error) {
	key := specialUse + "\x00" + name
	im.mu.Lock()
	mb := im.mailboxes[key]
	im.mu.Unlock()
	if mb != nil {
		return mb, nil
	}
	var err error
	if specialUse != "" {
		mb, err = im.Store.MailboxBySpecialUse(ctx, im.Account.ID, specialUse)
		if errors.Is(err, store.ErrNotFound) {
			mb, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
	}
	if mb == nil {
		mb, err = im.Store.MailboxByName(ctx, im.Account.ID, name)
		if errors.Is(err, store.ErrNotFound) {
			mb, err = im.Store.CreateMailbox(ctx, im.Account.ID, name, "")
			if errors.Is(err, store.ErrExists) { // another worker was first
				mb, err = im.Store.MailboxByName(ctx, im.Account.ID, name)
			}
		}
		if err == nil && mb.NoSelect {
			// A placeholder for children: make it hold mail.
			mb, err = im.Store.CreateMailbox(ctx, im.Account.ID, name, "")
			if errors.Is(err, store.ErrExists) {
				mb, err = im.Store.MailboxByName(ctx, im.Account.ID, name)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("mailbox %s: %w", name, err)
		}
	}
	im.mu.Lock()
	if im.mailboxes == nil {
		im.mailboxes = map[string]*store.Mailbox{}
	}
	im.mailboxes[key] = mb
	im.mu.Unlock()
	return mb, nil
}

// contentSet counts contents a target already holds, so an import skips
// exactly as many copies of a content as are there: a re-run after a new
// UIDVALIDITY, of a file import, or Gmail's All Mail against the labels.
type contentSet map[[32]byte]int

func (im *Importer) loadContents(ctx context.Context, mailboxID int64) (contentSet, error) {
	set := contentSet{}
	err := im.Store.ContentHashes(ctx, im.Account.ID, mailboxID, func(sum [32]byte) error {
		set[sum]++
		return nil
	})
	return set, err
}

// commit stores one batch (those of msgs the target does not hold yet,
// when have is not nil) with mark, in one transaction, and closes every
// spool.
func (im *Importer) commit(ctx context.Context, folder string, mb *store.Mailbox, mark store.ImportMark, msgs []*message, have contentSet) error {
	var dups, bytes, all int64
	for _, m := range msgs {
		all += m.msg.Size
	}
	i := 0
	next := func() (*store.BulkMessage, error) {
		for i < len(msgs) {
			m := msgs[i]
			i++
			if have != nil && have[m.msg.SHA256] > 0 {
				have[m.msg.SHA256]--
				dups++
				m.msg.Close()
				continue
			}
			bytes += m.msg.Size
			return &store.BulkMessage{Msg: m.msg, Flags: m.flags, InternalDate: m.date}, nil
		}
		return nil, nil
	}
	res, err := im.Store.ImportAppend(ctx, im.Account.ID, mb.ID, mark, next)
	// Whatever next did not hand over is still open.
	for _, m := range msgs[i:] {
		m.msg.Close()
	}
	if err != nil {
		return fmt.Errorf("store into %s: %w", mb.Name, err)
	}
	copied := int64(0)
	if res.LastUID != 0 {
		copied = int64(res.LastUID - res.FirstUID + 1)
	}
	im.mu.Lock()
	im.summary.Copied += copied
	im.summary.Duplicates += dups
	im.summary.Bytes += bytes
	im.mu.Unlock()
	im.Progress.add(folder, int64(len(msgs)), all)
	if im.afterCommit != nil {
		im.afterCommit()
	}
	return nil
}
