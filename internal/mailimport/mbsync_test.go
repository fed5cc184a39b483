package mailimport

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailstack/mailstack/imapd"
	"github.com/mailstack/mailstack/internal/tlsconfig"
	"github.com/mailstack/mailstack/store"
)

var tuid = regexp.MustCompile(`(?m)^X-TUID: [^\n]*\n`)

// mbsyncMirror mirrors every folder of an IMAP account into a Maildir with
// isync's mbsync, a real client, and returns each folder's messages as
// "content hash/flag letters", sorted. server is the store part of an
// mbsyncrc (IMAPAccount lines without the account's name).
func mbsyncMirror(t *testing.T, server string) map[string][]string {
	t.Helper()
	mbsync, err := exec.LookPath("mbsync")
	if err != nil {
		t.Fatalf("mbsync (Debian's isync, installed by deploy/install-deps) is required for this test: %v", err)
	}
	dir := t.TempDir()
	local := filepath.Join(dir, "local")
	if err := os.Mkdir(local, 0o700); err != nil {
		t.Fatal(err)
	}
	rc := filepath.Join(dir, "mbsyncrc")
	conf := fmt.Sprintf(`IMAPAccount a
%s

IMAPStore remote
Account a

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
`, server, local, local)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, mbsync, "-c", rc, "-a").CombinedOutput(); err != nil {
		t.Fatalf("mbsync: %v\n%s", err, out)
	}
	out := map[string][]string{}
	err = filepath.Walk(local, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		sub := filepath.Base(filepath.Dir(p))
		if sub != "cur" && sub != "new" {
			return nil
		}
		folder, _ := filepath.Rel(local, filepath.Dir(filepath.Dir(p)))
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		// mbsync marks each message it copies with a random X-TUID
		// header line of its own.
		b = tuid.ReplaceAll(b, nil)
		_, info, _ := strings.Cut(fi.Name(), ":2,")
		out[filepath.ToSlash(folder)] = append(out[filepath.ToSlash(folder)], fmt.Sprintf("%x/%s", sha256.Sum256(b), info))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k := range out {
		out[k] = sortedStrings(out[k])
	}
	return out
}

// serveIMAP serves the store over implicit TLS on loopback and returns
// the mbsyncrc lines to reach acc.
func serveIMAP(t *testing.T, st *store.Store, acc *store.Account) string {
	t.Helper()
	dir := t.TempDir()
	cfg, err := tlsconfig.SelfSigned(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := filepath.Glob(filepath.Join(dir, "*cert*.pem"))
	if err != nil || len(certs) != 1 {
		t.Fatalf("certificate: %v %v", certs, err)
	}
	pass, _, err := st.CreateAppPassword(context.Background(), acc.ID, "mbsync")
	if err != nil {
		t.Fatal(err)
	}
	srv := imapd.New(st, imapd.Options{TLSConfig: cfg, Logger: testLog(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	return fmt.Sprintf("Host %s\nPort %s\nUser %s\nPass %s\nSSLType IMAPS\nCertificateFile %s\nSystemCertificates no", host, port, acc.Address, pass, certs[0])
}
