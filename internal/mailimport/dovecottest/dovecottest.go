// Package dovecottest runs a Dovecot IMAP server for tests: Debian's
// dovecot-imapd on a loopback port, configured from a generated
// dovecot.conf in the test's temporary directory, with one account whose
// mail is a Maildir the test may fill before it starts.
package dovecottest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// Server is a Dovecot IMAP server (Debian's dovecot-imapd) run by a test
// on a loopback port, with one account whose mail is a Maildir (LAYOUT=fs,
// "/" as the delimiter, as iCloud and Gmail have it) in a temporary
// directory.
type Server struct {
	t          testing.TB
	dir        string
	Addr       string // host:port
	User, Pass string // of the account
	Maildir    string // the account's Maildir
	uid, gid   int    // owner of the mail files (-1: this process's)
}

// Folders with special-use attributes announced, as Gmail does; iCloud's
// "Sent Messages" and "Deleted Messages" are left to the name mapping.
const dovecotNamespace = `namespace inbox {
  inbox = yes
  separator = /
  mailbox "[Gmail]/All Mail" {
    special_use = \All
  }
  mailbox "[Gmail]/Sent Mail" {
    special_use = \Sent
  }
  mailbox "[Gmail]/Starred" {
    special_use = \Flagged
  }
  mailbox "[Gmail]/Spam" {
    special_use = \Junk
  }
}
`

// Options change the server Start runs.
type Options struct {
	// Populate, if set, fills the Maildir before Dovecot starts.
	Populate func(maildir string)
	// MaxUserIPConnections is Dovecot's mail_max_userip_connections
	// (default 50).
	MaxUserIPConnections int
}

// Start starts Dovecot; populate, if not nil, fills the Maildir
// before it starts (with files, as a mail program would).
func Start(t testing.TB, populate func(maildir string)) *Server {
	t.Helper()
	return StartOptions(t, Options{Populate: populate})
}

// StartOptions starts Dovecot as o says.
func StartOptions(t testing.TB, o Options) *Server {
	t.Helper()
	populate := o.Populate
	if o.MaxUserIPConnections <= 0 {
		o.MaxUserIPConnections = 50
	}
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Fatalf("dovecot (Debian's dovecot-imapd, installed by deploy/install-deps) is required for this test: %v", err)
	}
	d := &Server{t: t, dir: t.TempDir(), User: "src@example.test", Pass: "source-password", uid: -1, gid: -1}
	// Dovecot's processes must reach the directory: as root it runs the
	// mail processes as its own user.
	if err := os.Chmod(d.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for p := filepath.Dir(d.dir); p != "/" && p != "."; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
			os.Chmod(p, fi.Mode().Perm()|0o005) //nolint:errcheck // best effort; Dovecot says if it cannot
		}
	}
	internal, login, userdb := "", "", ""
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		du, err := user.Lookup("dovecot")
		if err != nil {
			t.Fatalf("user dovecot (made by Debian's dovecot-core) is missing: %v", err)
		}
		d.uid, _ = strconv.Atoi(du.Uid)
		d.gid, _ = strconv.Atoi(du.Gid)
		internal, login = "dovecot", "dovenull"
		userdb = fmt.Sprintf("uid=%d gid=%d ", d.uid, d.gid)
	} else {
		internal, login = me.Username, me.Username
	}
	d.Maildir = filepath.Join(d.dir, "mail", d.User, "Maildir")
	if err := os.MkdirAll(d.Maildir, 0o700); err != nil {
		t.Fatal(err)
	}
	if populate != nil {
		populate(d.Maildir)
	}
	if d.uid >= 0 {
		if err := filepath.Walk(filepath.Join(d.dir, "mail"), func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, d.uid, d.gid)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(d.dir, "passwd"), []byte(d.User+":{PLAIN}"+d.Pass+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A free port: taken from the kernel and released just before
	// Dovecot binds it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	d.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = mailstack-test-%[2]d
log_path = %[1]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = %[3]s
default_internal_group = %[3]s
default_login_user = %[4]s
first_valid_uid = 1
mail_location = maildir:~/Maildir:LAYOUT=fs
mail_max_userip_connections = %[8]d
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[1]s/passwd
}
userdb {
  driver = static
  args = %[5]shome=%[1]s/mail/%%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[6]d
  }
  inet_listener imaps {
    port = 0
  }
}
service stats {
  unix_listener stats-writer {
    mode = 0666
  }
}
%[7]s`, d.dir, port, internal, login, userdb, port, dovecotNamespace, o.MaxUserIPConnections)
	if os.Getuid() != 0 {
		conf = strings.Replace(conf, "default_internal_group = "+internal+"\n", "", 1)
	}
	confPath := filepath.Join(d.dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// In the foreground, as this process's child: it ends with the test.
	logf, err := os.Create(filepath.Join(d.dir, "dovecot.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-F", "-c", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dovecot: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // gone already is fine
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill() //nolint:errcheck
			<-exited
		}
		if t.Failed() {
			t.Logf("dovecot log:\n%s", d.Log())
		}
	})
	// Wait until it accepts connections.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.Addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("dovecot exited: %v\n%s", err, d.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecot does not listen on %s: %v\n%s", d.Addr, err, d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// Log returns Dovecot's log.
func (d *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
	o, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.out"))
	return string(b) + string(o)
}

// URL is the account's address for an importer.
func (d *Server) URL() string { return "imap://" + d.User + "@" + d.Addr }

// Client logs in to the account.
func (d *Server) Client() *imapclient.Client {
	d.t.Helper()
	c, err := imapclient.DialInsecure(d.Addr, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := c.Login(d.User, d.Pass).Wait(); err != nil {
		d.t.Fatalf("log in to dovecot: %v\n%s", err, d.Log())
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

// WriteMaildir writes n messages into a folder of a Dovecot Maildir
// (LAYOUT=fs: INBOX is the root), as a mail program would, every third
// one seen; returns their total size.
func WriteMaildir(t testing.TB, maildir, folder string, n, size int) int64 {
	t.Helper()
	dir := maildir
	if folder != "INBOX" {
		dir = filepath.Join(maildir, filepath.FromSlash(folder))
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pad := strings.Repeat("lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n", max(size/58, 1))
	var total int64
	for i := range n {
		body := fmt.Sprintf("From: sender%d@example.test\r\nTo: src@example.test\r\nSubject: %s message %d\r\nMessage-ID: <%s.%d@example.test>\r\n\r\n%s",
			i%97, folder, i, strings.ReplaceAll(folder, "/", "."), i, pad)
		info := ""
		if i%3 == 0 {
			info = "S"
		}
		p := filepath.Join(dir, "cur", fmt.Sprintf("%d.M%dP1.test,S=%d:2,%s", 1500000000+i, i, len(body), info))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		date := time.Unix(int64(1500000000+i*60), 0)
		if err := os.Chtimes(p, date, date); err != nil {
			t.Fatal(err)
		}
		total += int64(len(body))
	}
	return total
}
