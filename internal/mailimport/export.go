package mailimport

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailstack/mailstack/store"
)

// Export formats.
const (
	FormatMaildir = "maildir"
	FormatMbox    = "mbox"
)

// ExportSummary is what an export wrote.
type ExportSummary struct {
	Mailboxes, Messages, Bytes int64
	// DroppedKeywords counts keywords a Maildir could not name (Dovecot's
	// dovecot-keywords has 26 letters per folder).
	DroppedKeywords int64
}

// Exporter writes an account's mail to files.
type Exporter struct {
	Store    *store.Store
	Account  *store.Account
	Progress *Progress // nil: nothing reported
}

// Export writes every mailbox of the account into dir in format:
// FormatMaildir writes dir/<mailbox>/{cur,new,tmp} (the folder tree as
// directories, as Dovecot's LAYOUT=fs and mbsync's SubFolders Verbatim),
// flags in file names, keywords in dovecot-keywords, the internal date as
// the file's modification time; FormatMbox writes dir/<mailbox>.mbox in
// mboxrd with the internal date in each From_ line (mbox keeps no flags).
// Messages stream from the store a chunk at a time.
func (e *Exporter) Export(ctx context.Context, dir, format string) (*ExportSummary, error) {
	if format != FormatMaildir && format != FormatMbox {
		return nil, fmt.Errorf("unknown format %q: maildir or mbox", format)
	}
	mbs, err := e.Store.Mailboxes(ctx, e.Account.ID)
	if err != nil {
		return nil, err
	}
	sum := &ExportSummary{}
	for _, mb := range mbs {
		e.Progress.addTotal(mb.Messages, mb.Size)
	}
	for _, mb := range mbs {
		if mb.NoSelect {
			continue
		}
		path := filepath.Join(dir, filepath.FromSlash(safePath(mb.Name)))
		if format == FormatMaildir {
			err = e.exportMaildir(ctx, mb, path, sum)
		} else {
			err = e.exportMbox(ctx, mb, path+".mbox", sum)
		}
		if err != nil {
			return sum, fmt.Errorf("export %s: %w", mb.Name, err)
		}
		sum.Mailboxes++
	}
	return sum, nil
}

// safePath makes each level of a mailbox name a harmless file name: no
// "." or "..", no Maildir subdirectory name.
func safePath(name string) string {
	levels := strings.Split(name, "/")
	for i, l := range levels {
		switch l {
		case "", ".", "..", "cur", "new", "tmp":
			levels[i] = l + "_"
		}
		levels[i] = strings.ReplaceAll(levels[i], "\x00", "_")
	}
	return strings.Join(levels, "/")
}

// eachMessage calls fn with each message of mb and a reader of its body.
func (e *Exporter) eachMessage(ctx context.Context, mb *store.Mailbox, fn func(m *store.MessageMeta, body io.Reader) error) error {
	return e.Store.FetchMeta(ctx, e.Account.ID, mb.ID, []store.UIDRange{{Start: 1, Stop: 0}}, store.FetchOptions{Body: true},
		func(m *store.MessageMeta) error {
			var body io.Reader
			if m.Body != nil {
				body = bytes.NewReader(m.Body)
			} else {
				body = e.Store.OpenRange(ctx, e.Account.ID, m.MessageID, 0, m.Size)
			}
			if err := fn(m, body); err != nil {
				return err
			}
			e.Progress.add(mb.Name, 1, m.Size)
			return nil
		})
}

func (e *Exporter) exportMaildir(ctx context.Context, mb *store.Mailbox, dir string, sum *ExportSummary) error {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	letters := map[string]byte{}
	var keywords []string
	host, _ := os.Hostname()
	host = strings.NewReplacer("/", "_", ":", "_").Replace(host)
	if host == "" {
		host = "mailstack"
	}
	prefix := fmt.Sprintf("%d.M", time.Now().Unix())
	n := 0
	err := e.eachMessage(ctx, mb, func(m *store.MessageMeta, body io.Reader) error {
		n++
		var info []byte
		for _, f := range m.Flags {
			for _, mf := range maildirFlags {
				if strings.EqualFold(f, mf.flag) {
					info = append(info, mf.letter)
				}
			}
			if strings.HasPrefix(f, `\`) {
				continue
			}
			l, ok := letters[f]
			if !ok && len(keywords) < 26 {
				l, ok = 'a'+byte(len(keywords)), true
				letters[f] = l
				keywords = append(keywords, f)
			}
			if !ok {
				sum.DroppedKeywords++
				continue
			}
			info = append(info, l)
		}
		slices.Sort(info)
		// The UID order in the name: importers take files in name order.
		name := fmt.Sprintf("%s%010dP%d.%s,S=%d:2,%s", prefix, m.UID, os.Getpid(), host, m.Size, info)
		tmp := filepath.Join(dir, "tmp", name)
		if err := writeFile(tmp, body); err != nil {
			return err
		}
		if err := os.Chtimes(tmp, m.InternalDate, m.InternalDate); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, "cur", name)); err != nil {
			return err
		}
		sum.Messages++
		sum.Bytes += m.Size
		return nil
	})
	if err != nil {
		return err
	}
	if len(keywords) > 0 {
		var b strings.Builder
		for i, k := range keywords {
			b.WriteString(strconv.Itoa(i) + " " + k + "\n")
		}
		return os.WriteFile(filepath.Join(dir, "dovecot-keywords"), []byte(b.String()), 0o600)
	}
	return nil
}

func writeFile(path string, body io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func (e *Exporter) exportMbox(ctx context.Context, mb *store.Mailbox, path string, sum *ExportSummary) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 64<<10)
	err = e.eachMessage(ctx, mb, func(m *store.MessageMeta, body io.Reader) error {
		fmt.Fprintf(w, "From MAILER-DAEMON %s\n", m.InternalDate.UTC().Format(time.ANSIC))
		if err := writeMboxrd(w, body); err != nil {
			return err
		}
		sum.Messages++
		sum.Bytes += m.Size
		return nil
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// writeMboxrd writes one message escaped as mboxrd (a ">" before every
// line that matches ">*From "), ending it with a newline if it has none,
// and the empty line that separates it from the next.
func writeMboxrd(w *bufio.Writer, body io.Reader) error {
	br := bufio.NewReaderSize(body, 64<<10)
	atStart, last := true, byte('\n')
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if atStart && (isFromLine(line) || isEscapedFrom(line)) {
				w.WriteByte('>')
			}
			w.Write(line)
			last = line[len(line)-1]
			atStart = last == '\n'
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			return err
		}
	}
	if last != '\n' {
		w.WriteByte('\n')
	}
	_, err := w.WriteString("\n")
	return err
}
