package mailimport

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperImport()) // a child of TestImportIMAPKilled
	}
	storetest.Main(m)
}

// newAccount creates an account (and its domain) in st.
func newAccount(t testing.TB, st *store.Store, address string) *store.Account {
	t.Helper()
	ctx := context.Background()
	_, domain, _ := strings.Cut(address, "@")
	if _, err := st.DomainByName(ctx, domain); err != nil {
		if _, err := st.CreateDomain(ctx, domain, "sel", []byte("k")); err != nil {
			t.Fatal(err)
		}
	}
	acc, err := st.CreateAccount(ctx, address, "main-password", store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return acc
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// rec is a message as compared: content hash, size, flags, date.
type rec struct {
	sum   [32]byte
	size  int64
	flags string
	date  int64
}

func (r rec) String() string {
	return fmt.Sprintf("%x/%d/%s/%d", r.sum[:4], r.size, r.flags, r.date)
}

func flagString(flags []string) string {
	var out []string
	for _, f := range flags {
		if !strings.EqualFold(f, `\Recent`) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func sortRecs(rs []rec) []rec {
	sort.Slice(rs, func(i, j int) bool { return rs[i].String() < rs[j].String() })
	return rs
}

// storedFolder reads every message of an account's mailbox.
func storedFolder(t testing.TB, st *store.Store, acc *store.Account, name string) []rec {
	t.Helper()
	ctx := context.Background()
	mb, err := st.MailboxByName(ctx, acc.ID, name)
	if err != nil {
		t.Fatalf("mailbox %s: %v", name, err)
	}
	var metas []store.MessageMeta
	if err := st.FetchMeta(ctx, acc.ID, mb.ID, []store.UIDRange{{Start: 1, Stop: 0}}, store.FetchOptions{}, func(m *store.MessageMeta) error {
		metas = append(metas, *m)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var out []rec
	for _, m := range metas {
		h := sha256.New()
		if _, err := io.Copy(h, st.OpenRange(ctx, acc.ID, m.MessageID, 0, m.Size)); err != nil {
			t.Fatal(err)
		}
		r := rec{size: m.Size, flags: flagString(m.Flags), date: m.InternalDate.Unix()}
		copy(r.sum[:], h.Sum(nil))
		out = append(out, r)
	}
	return sortRecs(out)
}

// sourceRecs reads every message of a folder at an IMAP server.
func sourceRecs(t testing.TB, c *imapclient.Client, folder string) []rec {
	t.Helper()
	sel, err := c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("select %s: %v", folder, err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	fetch := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true, InternalDate: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	var out []rec
	for {
		m := fetch.Next()
		if m == nil {
			break
		}
		var r rec
		for {
			item := m.Next()
			if item == nil {
				break
			}
			switch item := item.(type) {
			case imapclient.FetchItemDataFlags:
				var fs []string
				for _, f := range item.Flags {
					fs = append(fs, string(f))
				}
				r.flags = flagString(fs)
			case imapclient.FetchItemDataInternalDate:
				r.date = item.Time.Unix()
			case imapclient.FetchItemDataBodySection:
				h := sha256.New()
				n, err := io.Copy(h, item.Literal)
				if err != nil {
					t.Fatal(err)
				}
				r.size = n
				copy(r.sum[:], h.Sum(nil))
			}
		}
		out = append(out, r)
	}
	if err := fetch.Close(); err != nil {
		t.Fatalf("fetch %s: %v", folder, err)
	}
	return sortRecs(out)
}

func equalRecs(t testing.TB, what string, got, want []rec) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: got %d messages %v, want %d %v", what, len(got), got, len(want), want)
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

func sortedStrings(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// appendMsg appends one message with flags and an internal date.
func appendMsg(t testing.TB, c *imapclient.Client, folder string, body []byte, date time.Time, flags ...imap.Flag) {
	t.Helper()
	cmd := c.Append(folder, int64(len(body)), &imap.AppendOptions{Flags: flags, Time: date})
	if _, err := cmd.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("append to %s: %v", folder, err)
	}
}
