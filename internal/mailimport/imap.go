package mailimport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailstack/mailstack/store"
)

// IMAPSource is a foreign IMAP server to import from.
type IMAPSource struct {
	// URL is imaps://user@host[:port] (TLS) or imap://user@host[:port]
	// (STARTTLS; plain text only to a loopback address).
	URL      string
	Password string
	// TLSConfig, if set, is used for TLS (tests trust their own server).
	TLSConfig *tls.Config
	// Connections is how many connections import folders in parallel
	// (default 4).
	Connections int
	// Retries is how often a folder is tried again after an error of the
	// server or the connection, waiting 1 s, 2 s, 4 s ... up to a minute
	// between tries (default 6).
	Retries int
	// RetryWait is the first wait (default 1 s).
	RetryWait time.Duration
	// Timeout is how long the connection may stay silent before it
	// counts as broken and is opened again (default 5 minutes, the value
	// of Dovecot's imapc_cmd_timeout). Unlike that timeout it runs whether
	// or not a command waits for its answer: imapclient always reads, so
	// local work between commands longer than this costs a reconnection.
	Timeout time.Duration
}

// Check reports a mistake in the source's URL (before a password is
// asked for).
func (src IMAPSource) Check() error {
	_, err := parseSource(src)
	return err
}

// imapSource is a parsed IMAPSource.
type imapSource struct {
	IMAPSource
	addr, host, user string
	implicitTLS      bool
	key              string // the import state's source key
}

func parseSource(src IMAPSource) (*imapSource, error) {
	u, err := url.Parse(src.URL)
	if err != nil {
		return nil, fmt.Errorf("source URL: %w", err)
	}
	s := &imapSource{IMAPSource: src}
	port := ""
	switch strings.ToLower(u.Scheme) {
	case "imaps":
		s.implicitTLS, port = true, "993"
	case "imap":
		port = "143"
	default:
		return nil, fmt.Errorf("source URL %q: the scheme must be imaps or imap", src.URL)
	}
	if u.User == nil || u.User.Username() == "" {
		return nil, fmt.Errorf("source URL %q: no user name (imaps://user@host)", src.URL)
	}
	if _, ok := u.User.Password(); ok {
		return nil, fmt.Errorf("source URL: give the password at the prompt or on standard input, never in the URL")
	}
	s.user, s.host = u.User.Username(), strings.ToLower(u.Hostname())
	if s.host == "" {
		return nil, fmt.Errorf("source URL %q: no host", src.URL)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	s.addr = net.JoinHostPort(s.host, port)
	scheme := "imap"
	if s.implicitTLS {
		scheme = "imaps"
	}
	s.key = scheme + "://" + url.User(s.user).String() + "@" + s.addr
	if s.Connections <= 0 {
		s.Connections = 4
	}
	if s.Retries <= 0 {
		s.Retries = 6
	}
	if s.RetryWait <= 0 {
		s.RetryWait = time.Second
	}
	if s.Timeout <= 0 {
		s.Timeout = 5 * time.Minute
	}
	return s, nil
}

func (s *imapSource) dial(ctx context.Context) (*imapclient.Client, error) {
	cfg := &tls.Config{}
	if s.TLSConfig != nil {
		cfg = s.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = s.host
	}
	opts := &imapclient.Options{TLSConfig: cfg}
	d := &net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", s.addr, err)
	}
	conn = &idleConn{Conn: conn, idle: s.Timeout}
	var c *imapclient.Client
	switch {
	case s.implicitTLS:
		if cfg.NextProtos == nil {
			cfg.NextProtos = []string{"imap"} // as imapclient.DialTLS
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("connect to %s: %w", s.addr, err)
		}
		c = imapclient.New(tc, opts)
	case isLoopback(s.host):
		c = imapclient.New(conn, opts)
	default:
		if c, err = imapclient.NewStartTLS(conn, opts); err != nil {
			conn.Close()
			return nil, fmt.Errorf("connect to %s: %w", s.addr, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.Login(s.user, s.Password).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("log in to %s as %s: %w", s.addr, s.user, err)
	}
	return c, nil
}

// idleConn fails a read after the server was silent for idle:
// imapclient clears the read deadline between responses, so a server
// that never answers a command would hang the import for ever.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// SetReadDeadline is imapclient's (none while no answer is due; Read
// sets its own).
func (c *idleConn) SetReadDeadline(time.Time) error { return nil }

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sourceFolder is one selectable folder at the source and where it goes.
type sourceFolder struct {
	name       string // at the source
	target     string // mailbox name in the account
	specialUse string // of the target, to find it if renamed
	// all: the folder holds every message (Gmail's All Mail); it is
	// imported after the others and skips contents the account holds.
	all bool
}

// Special-use attributes (RFC 6154).
const (
	useAll       = `\All`
	useArchive   = `\Archive`
	useDrafts    = `\Drafts`
	useFlagged   = `\Flagged`
	useJunk      = `\Junk`
	useSent      = `\Sent`
	useTrash     = `\Trash`
	useImportant = `\Important`
)

// wellKnown maps the usual names of special folders (iCloud, Gmail,
// Outlook, Yahoo, Thunderbird), lower case, to a special use, for servers
// that do not announce SPECIAL-USE.
var wellKnown = map[string]string{
	"sent": useSent, "sent messages": useSent, "sent mail": useSent, "sent items": useSent,
	"[gmail]/sent mail": useSent, "[google mail]/sent mail": useSent,
	"trash": useTrash, "deleted messages": useTrash, "deleted items": useTrash, "bin": useTrash,
	"[gmail]/trash": useTrash, "[gmail]/bin": useTrash, "[google mail]/trash": useTrash, "[google mail]/bin": useTrash,
	"junk": useJunk, "spam": useJunk, "junk e-mail": useJunk, "junk email": useJunk, "bulk mail": useJunk,
	"[gmail]/spam": useJunk, "[google mail]/spam": useJunk,
	"drafts": useDrafts, "draft": useDrafts, "[gmail]/drafts": useDrafts, "[google mail]/drafts": useDrafts,
	"archive": useArchive, "archives": useArchive,
	"[gmail]/all mail": useAll, "[google mail]/all mail": useAll,
	"[gmail]/starred": useFlagged, "[google mail]/starred": useFlagged,
	"[gmail]/important": useImportant, "[google mail]/important": useImportant,
}

// targetOf maps special uses to the account's mailboxes (the defaults of
// a new account).
var targetOf = map[string]string{
	useSent: "Sent", useTrash: "Trash", useJunk: "Junk", useDrafts: "Drafts", useArchive: "Archive", useAll: "Archive",
}

// mapFolders decides where each listed folder goes; prefix is the
// personal namespace's prefix (e.g. "INBOX." on Courier-style servers),
// stripped from names.
func mapFolders(list []*imap.ListData, prefix string) (folders []sourceFolder, skipped []string) {
	for _, l := range list {
		if hasAttr(l.Attrs, imap.MailboxAttrNoSelect) || hasAttr(l.Attrs, imap.MailboxAttrNonExistent) {
			continue
		}
		use := ""
		for _, a := range l.Attrs {
			switch string(a) {
			case useAll, useArchive, useDrafts, useFlagged, useJunk, useSent, useTrash, useImportant:
				use = string(a)
			}
		}
		name := l.Mailbox
		rel := name
		if prefix != "" && !strings.EqualFold(name, "INBOX") && strings.HasPrefix(name, prefix) {
			rel = name[len(prefix):]
		}
		f, skip := mapFolder(name, rel, l.Delim, use)
		if skip != "" {
			skipped = append(skipped, name+": "+skip)
			continue
		}
		folders = append(folders, f)
	}
	// The labels first, All Mail last, so it can skip what they brought.
	slices.SortStableFunc(folders, func(a, b sourceFolder) int {
		switch {
		case a.all == b.all:
			return 0
		case b.all:
			return -1
		}
		return 1
	})
	return folders, skipped
}

// mapFolder decides where source folder name (rel without the personal
// namespace's prefix, levels split by delim; use its special use if the
// source said) goes, or why it is left out.
func mapFolder(name, rel string, delim rune, use string) (f sourceFolder, skip string) {
	if use == "" {
		n := rel
		if delim != 0 {
			n = strings.ReplaceAll(rel, string(delim), "/")
		}
		use = wellKnown[strings.ToLower(n)]
	}
	f = sourceFolder{name: name}
	switch {
	case strings.EqualFold(rel, "INBOX"):
		f.target = "INBOX"
	case use == useFlagged || use == useImportant:
		// Views of messages kept elsewhere (Gmail's Starred and
		// Important): their messages come with their folders, with
		// \Flagged set.
		return f, "a view of messages in other folders"
	case targetOf[use] != "":
		f.target, f.specialUse, f.all = targetOf[use], use, use == useAll
		if use == useAll {
			f.specialUse = useArchive
		}
	default:
		f.target = targetName(rel, delim)
		// Checked here, not at CREATE: a name no mailbox can have would
		// fail its folder's every try and so end the whole import.
		if _, err := store.NewMailboxName(f.target); err != nil {
			return f, "no mailbox can have its name: " + err.Error()
		}
	}
	return f, ""
}

// targetName turns a source name into a mailbox name: levels joined by
// "/" whatever the source's delimiter; a "/" inside a level becomes "_".
func targetName(name string, delim rune) string {
	if delim == 0 || delim == '/' {
		return name
	}
	levels := strings.Split(name, string(delim))
	for i, l := range levels {
		levels[i] = strings.ReplaceAll(l, "/", "_")
	}
	return strings.Join(levels, "/")
}

func hasAttr(attrs []imap.MailboxAttr, a imap.MailboxAttr) bool {
	for _, x := range attrs {
		if strings.EqualFold(string(x), string(a)) {
			return true
		}
	}
	return false
}

// ImportIMAP copies every folder of the source into the account: what is
// new since the last run, resuming where a cut-off run stopped.
func (im *Importer) ImportIMAP(ctx context.Context, src IMAPSource) error {
	s, err := parseSource(src)
	if err != nil {
		return err
	}
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	folders, err := im.listFolders(c)
	stop()
	c.Close()
	if err != nil {
		return err
	}
	marks, err := im.Store.ImportMarks(ctx, im.Account.ID, s.key)
	if err != nil {
		return err
	}
	// Labels in parallel, then the All Mail folders (which need the
	// labels stored first).
	first := slices.IndexFunc(folders, func(f sourceFolder) bool { return f.all })
	if first < 0 {
		first = len(folders)
	}
	for _, group := range [][]sourceFolder{folders[:first], folders[first:]} {
		if err := im.importFolders(ctx, s, group, marks); err != nil {
			return err
		}
	}
	return nil
}

func (im *Importer) listFolders(c *imapclient.Client) ([]sourceFolder, error) {
	opts := &imap.ListOptions{}
	if c.Caps().Has(imap.CapSpecialUse) {
		opts.ReturnSpecialUse = true
	}
	list, err := c.List("", "*", opts).Collect()
	if err != nil {
		return nil, fmt.Errorf("list folders: %w", err)
	}
	prefix := ""
	if c.Caps().Has(imap.CapNamespace) {
		if ns, err := c.Namespace().Wait(); err == nil && len(ns.Personal) > 0 {
			prefix = ns.Personal[0].Prefix
		}
	}
	folders, skipped := mapFolders(list, prefix)
	for _, sk := range skipped {
		name, why, _ := strings.Cut(sk, ": ")
		im.skipFolder(name, why)
	}
	return folders, nil
}

// importFolders imports folders with up to s.Connections connections.
func (im *Importer) importFolders(ctx context.Context, s *imapSource, folders []sourceFolder, marks map[string]store.ImportMark) error {
	if len(folders) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan sourceFolder)
	var wg sync.WaitGroup
	var connected atomic.Int32
	for range min(s.Connections, len(folders)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &imapWorker{im: im, s: s}
			defer w.close()
			if err := w.connect(ctx, &connected); err != nil {
				if errors.Is(err, errEnoughConnections) {
					return // the others take the folders
				}
				cancel(err)
				return
			}
			for f := range jobs {
				if err := w.folder(ctx, f, marks[f.name]); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	gone := make(chan struct{}) // every worker has ended
	go func() { wg.Wait(); close(gone) }()
	fed := 0
feed:
	for _, f := range folders {
		select {
		case jobs <- f:
			fed++
		case <-ctx.Done():
			break feed
		case <-gone:
			break feed
		}
	}
	close(jobs)
	<-gone
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if fed < len(folders) {
		return fmt.Errorf("no connection to %s could be kept", s.addr)
	}
	return nil
}

// errEnoughConnections: the server refused another connection while
// others are open; this worker leaves the folders to them.
var errEnoughConnections = errors.New("the server allows no more connections")

// connect opens the worker's connection. A server that refuses it as one
// too many (Dovecot's mail_max_userip_connections, Gmail's 15, iCloud's
// limits: [UNAVAILABLE] or [LIMIT]) while other workers are connected
// gets errEnoughConnections; with none connected it is asked again with
// backoff.
func (w *imapWorker) connect(ctx context.Context, connected *atomic.Int32) error {
	wait := w.s.RetryWait
	for try := 0; ; try++ {
		c, err := w.s.dial(ctx)
		if err == nil {
			w.c = c
			connected.Add(1)
			return nil
		}
		var ierr *imap.Error
		if !errors.As(err, &ierr) || !retryable(ierr) || try >= w.s.Retries {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		if connected.Load() > 0 {
			w.im.log().Info("import: the server allows fewer connections; going on with the others", "err", err.Error())
			return errEnoughConnections
		}
		wait = min(2*wait, time.Minute)
	}
}

// imapWorker is one connection importing folders one after the other.
type imapWorker struct {
	im *Importer
	s  *imapSource
	c  *imapclient.Client
	// careful: messages up to this UID are fetched one at a time, after a
	// batch that broke the connection (Dovecot says BYE when it cannot
	// read a message).
	careful   imap.UID
	mailboxID int64    // the target of the folder under way
	announced imap.UID // messages up to here were counted in the progress
	// noDates: the folder's INTERNALDATEs could not be read, so they are
	// not asked for (the messages get the time of the import).
	noDates bool
}

// sendError is a message whose fetch alone broke the connection.
type sendError struct {
	uid imap.UID
	err error
}

func (e *sendError) Error() string { return fmt.Sprintf("UID %d: %v", e.uid, e.err) }
func (e *sendError) Unwrap() error { return e.err }

func (w *imapWorker) close() {
	if w.c != nil {
		w.c.Logout().Wait() //nolint:errcheck // leaving anyway
		w.c.Close()
		w.c = nil
	}
}

// folder imports one folder, trying again after errors with backoff;
// each try resumes from the mark committed last.
func (w *imapWorker) folder(ctx context.Context, f sourceFolder, mark store.ImportMark) error {
	wait := w.s.RetryWait
	strikes := map[imap.UID]int{}
	w.careful, w.announced, w.noDates = 0, 0, false
	var total int64
	// What the target holds, once loaded: an attempt after a cut
	// still skips it (the mark has a source by then).
	var have contentSet
	for try := 0; ; try++ {
		var err error
		if w.c == nil {
			if w.c, err = w.s.dial(ctx); err != nil {
				var ierr *imap.Error
				if errors.As(err, &ierr) && !retryable(ierr) {
					return err // a login refused now will be refused again
				}
			}
		}
		before := mark.LastUID
		var done int64
		if w.c != nil {
			done, err = w.folderOnce(ctx, f, &mark, &have)
		}
		total += done
		if err == nil {
			w.im.Progress.folderDone(f.name, total)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ierr *imap.Error
		if errors.As(err, &ierr) && ierr.Code == imap.ResponseCodeNonExistent {
			w.im.skipFolder(f.name, "gone at the source")
			return nil
		}
		if mark.LastUID > before {
			try = 0 // progress: the error is not the folder's
		}
		var serr *sendError
		if errors.As(err, &serr) {
			if strikes[serr.uid]++; strikes[serr.uid] >= 2 {
				// The server cannot send this message: record it and go
				// past it.
				w.im.fail(f.name, "UID "+strconv.Itoa(int(serr.uid)), "the server cannot send it: "+serr.err.Error())
				next := mark
				next.LastUID = uint32(serr.uid)
				if _, err := w.im.Store.ImportAppend(ctx, w.im.Account.ID, w.mailboxID, next, func() (*store.BulkMessage, error) { return nil, nil }); err != nil {
					return err
				}
				mark, try = next, 0
				w.im.Progress.add(f.name, 1, 0)
			}
		}
		if try >= w.s.Retries {
			return fmt.Errorf("folder %s: %w", f.name, err)
		}
		w.im.log().Warn("import: retrying folder", "folder", f.name, "err", err.Error(), "wait", wait)
		// The connection may be broken or throttled: start afresh.
		if w.c != nil {
			w.c.Close()
			w.c = nil
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		if try > 0 {
			wait = min(2*wait, time.Minute)
		}
	}
}

// meta is what the first pass learns of a message.
type meta struct {
	uid   imap.UID
	flags []string
	date  time.Time
	size  int64
}

// folderOnce imports what is new in one folder and returns how many
// messages it handled; *mark advances with each committed batch. *have is
// the contents to skip, loaded by the first attempt that needs it.
func (w *imapWorker) folderOnce(ctx context.Context, f sourceFolder, mark *store.ImportMark, have *contentSet) (int64, error) {
	im, c := w.im, w.c
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	sel, err := c.Select(f.name, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return 0, fmt.Errorf("examine: %w", err)
	}
	mb, err := im.mailbox(ctx, f.target, f.specialUse)
	if err != nil {
		return 0, err
	}
	w.mailboxID = mb.ID
	fresh := mark.Source == "" || mark.UIDValidity != sel.UIDValidity
	if fresh {
		if mark.Source != "" {
			im.log().Info("import: folder has a new UIDVALIDITY, starting it again", "folder", f.name)
			*have = nil
		}
		*mark = store.ImportMark{Source: w.s.key, Folder: f.name, UIDValidity: sel.UIDValidity}
	}
	switch {
	case *have != nil:
	case f.all:
		// Gmail's All Mail holds every message of every label: skip what
		// the labels brought.
		if *have, err = im.loadContents(ctx, 0); err != nil {
			return 0, err
		}
	case fresh:
		// From the start: skip what the target holds already (a previous
		// import from a folder since re-created).
		if *have, err = im.loadContents(ctx, mb.ID); err != nil {
			return 0, err
		}
	}
	if sel.NumMessages == 0 || (sel.UIDNext != 0 && uint32(sel.UIDNext) <= mark.LastUID+1) {
		return 0, nil
	}
	// First pass: UIDs, flags, dates and sizes of the new messages.
	var metas []meta
	set := imap.UIDSet{{Start: imap.UID(mark.LastUID + 1), Stop: 0}}
	fetch := c.Fetch(set, &imap.FetchOptions{UID: true, Flags: true, InternalDate: !w.noDates, RFC822Size: true})
	for {
		m := fetch.Next()
		if m == nil {
			break
		}
		buf, err := m.Collect()
		if err != nil {
			fetch.Close()
			return 0, w.badDate(f, err)
		}
		if uint32(buf.UID) <= mark.LastUID { // n:* includes the last message
			continue
		}
		flags := make([]string, len(buf.Flags))
		for i, fl := range buf.Flags {
			flags[i] = string(fl)
		}
		metas = append(metas, meta{uid: buf.UID, flags: cleanFlags(flags), date: buf.InternalDate, size: buf.RFC822Size})
	}
	if err := fetch.Close(); err != nil {
		return 0, fmt.Errorf("list new messages: %w", w.badDate(f, err))
	}
	slices.SortFunc(metas, func(a, b meta) int { return int(a.uid) - int(b.uid) })
	var news, total int64
	for _, m := range metas {
		if m.uid > w.announced {
			news++
			total += m.size
		}
	}
	if len(metas) > 0 {
		w.announced = max(w.announced, metas[len(metas)-1].uid)
	}
	im.Progress.addTotal(news, total)

	// Second pass: bodies, a batch at a time, fetched while the previous
	// batch is stored.
	type batch struct {
		msgs []*message
		last imap.UID
	}
	batches := make(chan batch, 1)
	fetchErr := make(chan error, 1)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(batches)
		for start := 0; start < len(metas); {
			end, bytes := start, int64(0)
			limit := im.batchMessages()
			if metas[start].uid <= w.careful {
				limit = 1
			}
			for end < len(metas) && end-start < limit && (end == start || bytes+metas[end].size <= im.batchBytes()) {
				bytes += metas[end].size
				end++
			}
			msgs, err := w.fetchBodies(f, metas[start:end])
			if err != nil {
				var ierr *imap.Error
				if !errors.As(err, &ierr) || ierr.Type == imap.StatusResponseTypeBye {
					// The connection broke: maybe a message the server
					// cannot send. Next time, one at a time.
					if end-start == 1 {
						err = &sendError{uid: metas[start].uid, err: err}
					} else {
						w.careful = metas[end-1].uid
					}
				}
				fetchErr <- err
				return
			}
			select {
			case batches <- batch{msgs, metas[end-1].uid}:
			case <-fctx.Done():
				closeAll(msgs)
				return
			}
			start = end
		}
	}()
	var done int64
	for b := range batches {
		m := *mark
		m.LastUID = uint32(b.last)
		n := int64(len(b.msgs))
		if err := im.commit(ctx, f.name, mb, m, b.msgs, *have); err != nil {
			cancel()
			for rest := range batches {
				closeAll(rest.msgs)
			}
			return done, err
		}
		*mark = m
		done += n
	}
	select {
	case err := <-fetchErr:
		return done, err
	default:
	}
	return done, nil
}

// badDate notes a first pass that failed on an INTERNALDATE the client
// cannot parse (a year 10000, garbage): the next try asks for none,
// rather than every try failing and the whole import with them. go-imap
// says so only in its error's text.
func (w *imapWorker) badDate(f sourceFolder, err error) error {
	if !w.noDates && strings.Contains(err.Error(), "in date-time") {
		w.noDates = true
		w.im.log().Warn("import: the server sends dates that cannot be read; the folder's messages get the time of the import", "folder", f.name, "err", err.Error())
	}
	return err
}

// retryable reports whether a NO from the server says "not now" (a
// throttling or busy server) rather than "not this message".
func retryable(err *imap.Error) bool {
	switch err.Code {
	case imap.ResponseCodeLimit, imap.ResponseCodeUnavailable, imap.ResponseCodeInUse, imap.ResponseCodeOverQuota:
		return true
	}
	return err.Type == imap.StatusResponseTypeBye
}

func closeAll(msgs []*message) {
	for _, m := range msgs {
		m.msg.Close()
	}
}

// fetchBodies fetches the bodies of metas (ascending UIDs). A message the
// server does not send, or that cannot be spooled, is recorded as failed;
// an error of the connection fails the batch.
func (w *imapWorker) fetchBodies(f sourceFolder, metas []meta) ([]*message, error) {
	var set imap.UIDSet
	byUID := make(map[imap.UID]*meta, len(metas))
	for i := range metas {
		set.AddNum(metas[i].uid)
		byUID[metas[i].uid] = &metas[i]
	}
	section := &imap.FetchItemBodySection{Peek: true}
	fetch := w.c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}})
	got := make(map[imap.UID]*message, len(metas))
	fail := func(err error) ([]*message, error) {
		fetch.Close()
		for _, m := range got {
			if m != nil { // too big, or NIL: nothing was spooled
				m.msg.Close()
			}
		}
		return nil, err
	}
	for {
		m := fetch.Next()
		if m == nil {
			break
		}
		var uid imap.UID
		var sp *store.Spooled
		var spoolErr error
		for {
			item := m.Next()
			if item == nil {
				break
			}
			switch item := item.(type) {
			case imapclient.FetchItemDataUID:
				uid = item.UID
			case imapclient.FetchItemDataBodySection:
				if item.Literal == nil {
					spoolErr = errors.New("the server sent NIL")
					continue
				}
				s, err := store.Spool(item.Literal, w.im.maxMessageSize())
				if err != nil && !errors.Is(err, store.ErrTooBig) {
					// A read error of the literal is one of the
					// connection: the rest of the response is lost.
					if sp != nil {
						sp.Close()
					}
					return fail(err)
				}
				if err != nil {
					spoolErr = err
					continue
				}
				if sp != nil {
					sp.Close()
				}
				sp = s
			}
		}
		mt := byUID[uid]
		switch {
		case mt == nil || got[uid] != nil:
			if sp != nil {
				sp.Close() // a message not asked for (or twice)
			}
		case spoolErr != nil:
			if sp != nil {
				sp.Close()
			}
			w.im.fail(f.name, "UID "+strconv.Itoa(int(uid)), spoolFailure(spoolErr, w.im.maxMessageSize()))
			got[uid] = nil
		case sp != nil:
			got[uid] = &message{id: "UID " + strconv.Itoa(int(uid)), msg: sp, flags: mt.flags, date: mt.date}
		}
	}
	var why string
	if err := fetch.Close(); err != nil {
		var ierr *imap.Error
		if !errors.As(err, &ierr) || retryable(ierr) {
			return fail(err)
		}
		// NO for some messages (Dovecot: a mail file it cannot read;
		// Gmail: a message it cannot parse): the rest may have come.
		why = "the server refused it: " + ierr.Text
	}
	out := make([]*message, 0, len(metas))
	for i, mt := range metas {
		m, ok := got[mt.uid]
		switch {
		case !ok && why != "" && len(metas) > 1:
			// A server may stop at the message it cannot send: ask for
			// each missing one alone.
			one, err := w.fetchBodies(f, metas[i:i+1])
			if err != nil {
				closeAll(out)
				for _, m := range got {
					if m != nil && !slices.Contains(out, m) {
						m.msg.Close()
					}
				}
				return nil, err
			}
			out = append(out, one...)
			continue
		case !ok:
			if why == "" {
				why = "the server did not send it"
			}
			w.im.fail(f.name, "UID "+strconv.Itoa(int(mt.uid)), why)
		case m != nil:
			out = append(out, m)
		}
	}
	if len(metas) == 1 {
		return out, nil
	}
	// Those failed count as handled for the progress.
	w.im.Progress.add(f.name, int64(len(metas)-len(out)), 0)
	return out, nil
}
