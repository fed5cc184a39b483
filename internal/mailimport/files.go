package mailimport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailstack/mailstack/store"
)

// fileFolder is one mbox file or Maildir folder to import.
type fileFolder struct {
	sourceFolder
	path string
}

// importStream stores the messages next yields into f's target, a batch
// per transaction. Contents the target held before are skipped (once per
// copy held), so importing the same files again copies nothing.
func (im *Importer) importStream(ctx context.Context, f fileFolder, next func() (*message, error)) error {
	mb, err := im.mailbox(ctx, f.target, f.specialUse)
	if err != nil {
		return err
	}
	scope := mb.ID
	if f.all {
		scope = 0
	}
	have, err := im.loadContents(ctx, scope)
	if err != nil {
		return err
	}
	var batch []*message
	var bytes, done int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := im.commit(ctx, f.name, mb, store.ImportMark{}, batch, have)
		done += int64(len(batch))
		batch, bytes = batch[:0], 0
		return err
	}
	defer func() { closeAll(batch) }()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := next()
		if err != nil {
			return fmt.Errorf("%s: %w", f.path, err)
		}
		if m == nil {
			break
		}
		if len(batch) > 0 && (len(batch) >= im.batchMessages() || bytes+m.msg.Size > im.batchBytes()) {
			if err := flush(); err != nil {
				m.msg.Close()
				return err
			}
		}
		batch = append(batch, m)
		bytes += m.msg.Size
	}
	if err := flush(); err != nil {
		return err
	}
	im.Progress.folderDone(f.name, done)
	return nil
}

// fileTarget maps a folder name of a file tree (levels split by "/").
func fileTarget(name string) (sourceFolder, string) {
	return mapFolder(name, name, '/', "")
}

// ImportMbox imports an mbox file (into the folder its name says: INBOX
// for "INBOX.mbox" or "inbox", Sent for "Sent Messages.mbox", ...) or a
// tree of them (files named *.mbox or mbox, the folder tree kept: a/b.mbox
// goes to a/b). The format is mboxrd: lines ">From " with any number of
// ">" lose one, which also reads mboxo and mboxcl files right but for
// lines that began ">From " in the original. The date of each From_ line
// is the internal date.
func (im *Importer) ImportMbox(ctx context.Context, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	var folders []fileFolder
	if !fi.IsDir() {
		name := strings.TrimSuffix(filepath.Base(path), ".mbox")
		f, _ := fileTarget(name)
		folders = append(folders, fileFolder{f, path})
	} else {
		err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !(strings.HasSuffix(d.Name(), ".mbox") || d.Name() == "mbox") {
				return err
			}
			rel, _ := filepath.Rel(path, p)
			name := filepath.ToSlash(strings.TrimSuffix(strings.TrimSuffix(rel, ".mbox"), "/mbox"))
			if name == "mbox" {
				name = "INBOX"
			}
			f, skip := fileTarget(name)
			if skip != "" {
				im.skipFolder(name, skip)
				return nil
			}
			folders = append(folders, fileFolder{f, p})
			return nil
		})
		if err != nil {
			return err
		}
	}
	sortFileFolders(folders)
	for _, f := range folders {
		if err := im.importMboxFile(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

// sortFileFolders puts All Mail last (see sourceFolder.all).
func sortFileFolders(folders []fileFolder) {
	slices.SortStableFunc(folders, func(a, b fileFolder) int {
		switch {
		case a.all == b.all:
			return strings.Compare(a.name, b.name)
		case b.all:
			return -1
		}
		return 1
	})
}

func (im *Importer) importMboxFile(ctx context.Context, f fileFolder) error {
	file, err := os.Open(f.path)
	if err != nil {
		return err
	}
	defer file.Close()
	if fi, err := file.Stat(); err == nil {
		im.Progress.addTotal(0, fi.Size())
	}
	r := newMboxReader(file)
	n := 0
	return im.importStream(ctx, f, func() (*message, error) {
		for {
			from, ok, err := r.next()
			if err != nil || !ok {
				return nil, err
			}
			n++
			sp := im.spool(f.name, "message "+strconv.Itoa(n), r)
			if err := r.skipRest(); err != nil {
				if sp != nil {
					sp.Close()
				}
				return nil, err
			}
			if sp == nil {
				continue
			}
			return &message{id: "message " + strconv.Itoa(n), msg: sp, date: fromLineDate(from)}, nil
		}
	})
}

// mboxReader reads the messages of an mbox file one by one: after next,
// Read gives the current message's bytes (unescaped), then io.EOF.
type mboxReader struct {
	br      *bufio.Reader
	atStart bool   // the next byte begins a line
	from    []byte // the From_ line that begins the next message
	held    []byte // an empty line held back ("\n" or "\r\n"): dropped if the message ends
	cur     []byte // bytes to give before reading on
	done    bool   // the current message has ended
	eof     bool
	started bool
}

func newMboxReader(r io.Reader) *mboxReader {
	return &mboxReader{br: bufio.NewReaderSize(r, 64<<10), atStart: true, done: true}
}

func isFromLine(line []byte) bool { return bytes.HasPrefix(line, []byte("From ")) }

// isEscapedFrom reports whether line is ">From " with one or more ">".
func isEscapedFrom(line []byte) bool {
	l := bytes.TrimLeft(line, ">")
	return len(l) < len(line) && bytes.HasPrefix(l, []byte("From "))
}

// next moves to the next message and returns its From_ line; ok is false
// at the end of the file.
func (r *mboxReader) next() (from []byte, ok bool, err error) {
	if !r.started {
		r.started = true
		line, err := r.br.ReadSlice('\n')
		if len(line) == 0 && err == io.EOF {
			r.eof = true
			return nil, false, nil // empty file
		}
		if !isFromLine(line) {
			return nil, false, errors.New("not an mbox file: it does not begin with a From_ line")
		}
		r.from = append(r.from[:0], line...)
		if err := r.skipLine(err); err != nil {
			return nil, false, err
		}
	}
	if r.eof {
		return nil, false, nil
	}
	from = append([]byte(nil), r.from...)
	r.done, r.held, r.cur, r.atStart = false, nil, nil, true
	return from, true, nil
}

// skipLine reads past the rest of a From_ line longer than the buffer
// (err is its ReadSlice's): none of it is the message.
func (r *mboxReader) skipLine(err error) error {
	for err == bufio.ErrBufferFull {
		_, err = r.br.ReadSlice('\n')
	}
	if err != nil && err != io.EOF {
		return err
	}
	return nil
}

// Read reads the current message.
func (r *mboxReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.done {
			return 0, io.EOF
		}
		line, err := r.br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return 0, err
		}
		if len(line) == 0 && err == io.EOF {
			r.done, r.eof = true, true
			return 0, io.EOF
		}
		whole := len(line) > 0 && line[len(line)-1] == '\n'
		if r.atStart && isFromLine(line) {
			r.from = append(r.from[:0], line...)
			if err := r.skipLine(err); err != nil {
				return 0, err
			}
			r.done = true
			return 0, io.EOF
		}
		out := r.held
		r.held = nil
		if r.atStart && whole && (len(line) == 1 || len(line) == 2 && line[0] == '\r') {
			// The empty line before a From_ line belongs to the format,
			// CRLF in a file of CRLF lines (Dovecot's crlf_ending).
			r.held = slices.Clone(line) // line is the reader's buffer
			r.cur = out
			continue
		}
		if r.atStart && isEscapedFrom(line) {
			line = line[1:]
		}
		r.cur = append(out, line...)
		r.atStart = whole
		if err == io.EOF {
			r.done, r.eof = true, true
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// skipRest reads past what is left of the current message (Spool may
// stop early on a message too big).
func (r *mboxReader) skipRest() error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// fromLineDate reads the date of a From_ line ("From sender Thu Jan  1
// 10:00:00 1999"); zero if there is none.
func fromLineDate(line []byte) time.Time {
	s := strings.TrimSpace(string(line))
	if _, rest, ok := strings.Cut(s, " "); ok {
		if _, rest, ok = strings.Cut(strings.TrimSpace(rest), " "); ok {
			rest = strings.TrimSpace(rest)
			for _, layout := range []string{time.ANSIC, "Mon Jan _2 15:04:05 2006 -0700", "Mon Jan _2 15:04:05 MST 2006", "Mon Jan _2 15:04 2006"} {
				if t, err := time.Parse(layout, rest); err == nil {
					return t
				}
			}
		}
	}
	return time.Time{}
}

// maildirFlags maps Maildir info letters to IMAP flags (the letters
// Dovecot, mbsync and Courier use).
var maildirFlags = []struct {
	letter byte
	flag   string
}{
	{'D', `\Draft`}, {'F', `\Flagged`}, {'R', `\Answered`}, {'S', `\Seen`}, {'T', `\Deleted`},
}

// ImportMaildir imports a Maildir tree: the root's own cur and new are
// INBOX; its folders are either Maildir++ (".Sent", ".Work.Projects":
// Dovecot's and Courier's default) or directories (Sent/, Work/Projects/:
// Dovecot's LAYOUT=fs, mbsync's SubFolders Verbatim), or both. Flags come
// from file names, keywords from Dovecot's dovecot-keywords file, the
// internal date from the file's modification time; files are taken in
// name order (their delivery order for Dovecot and most writers).
func (im *Importer) ImportMaildir(ctx context.Context, root string) error {
	var folders []fileFolder
	add := func(name, dir string) {
		f, skip := fileTarget(name)
		if skip != "" {
			im.skipFolder(name, skip)
			return
		}
		folders = append(folders, fileFolder{f, dir})
	}
	if isMaildir(root) {
		add("INBOX", root)
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == root {
			return err
		}
		switch d.Name() {
		case "cur", "new", "tmp":
			return filepath.SkipDir
		}
		if !isMaildir(p) {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(d.Name(), ".") && filepath.Dir(p) == filepath.Clean(root) {
			rel = strings.ReplaceAll(rel[1:], ".", "/") // Maildir++
		}
		add(rel, p)
		return nil
	})
	if err != nil {
		return err
	}
	if len(folders) == 0 {
		return fmt.Errorf("%s: no Maildir here (no cur directory)", root)
	}
	sortFileFolders(folders)
	for _, f := range folders {
		if err := im.importMaildirFolder(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

func isMaildir(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "cur"))
	return err == nil && fi.IsDir()
}

func (im *Importer) importMaildirFolder(ctx context.Context, f fileFolder) error {
	keywords := readKeywords(filepath.Join(f.path, "dovecot-keywords"))
	var files []string
	for _, sub := range []string{"cur", "new"} {
		entries, err := os.ReadDir(filepath.Join(f.path, sub))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, e := range entries {
			switch {
			case strings.HasPrefix(e.Name(), "."):
			case e.Type().IsRegular():
				files = append(files, filepath.Join(sub, e.Name()))
			case e.Type()&fs.ModeSymlink != 0:
				// It may point at any file the importing user can read
				// (an import run as root): reported, never followed.
				im.fail(f.name, filepath.Join(sub, e.Name()), "a symbolic link: not followed")
			}
		}
	}
	slices.SortFunc(files, func(a, b string) int { return strings.Compare(filepath.Base(a), filepath.Base(b)) })
	im.Progress.addTotal(int64(len(files)), 0)
	i := 0
	return im.importStream(ctx, f, func() (*message, error) {
		for i < len(files) {
			name := files[i]
			i++
			file, err := os.Open(filepath.Join(f.path, name))
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) { // gone meanwhile: moved by a mail program
					im.fail(f.name, name, err.Error())
				}
				continue
			}
			var date time.Time
			if fi, err := file.Stat(); err == nil {
				date = fi.ModTime()
			}
			sp := im.spool(f.name, name, file)
			file.Close()
			if sp == nil {
				continue
			}
			return &message{id: name, msg: sp, date: date, flags: parseInfo(name, keywords)}, nil
		}
		return nil, nil
	})
}

// parseInfo reads the flags of a Maildir file name ("...:2,FRS" or, on
// systems where ":" is not allowed, "...;2,FRS" or "...!2,FRS").
func parseInfo(name string, keywords map[byte]string) []string {
	base := filepath.Base(name)
	i := strings.LastIndexAny(base, ":;!")
	if i < 0 || !strings.HasPrefix(base[i+1:], "2,") {
		return nil
	}
	var flags []string
	for _, c := range []byte(base[i+3:]) {
		for _, mf := range maildirFlags {
			if mf.letter == c {
				flags = append(flags, mf.flag)
			}
		}
		if kw, ok := keywords[c]; ok {
			flags = append(flags, kw)
		}
	}
	return cleanFlags(flags)
}

// readKeywords reads Dovecot's dovecot-keywords ("0 $Forwarded" per line:
// letter a is keyword 0).
func readKeywords(path string) map[byte]string {
	out := map[byte]string{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		num, kw, ok := strings.Cut(strings.TrimSpace(line), " ")
		if n, err := strconv.Atoi(num); ok && err == nil && n >= 0 && n < 26 {
			out['a'+byte(n)] = kw
		}
	}
	return out
}
