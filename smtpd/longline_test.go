package smtpd_test

import (
	"net"
	"net/textproto"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd"
)

// TestLongLines sends messages whose body is one line of up to 1 MB (HTML
// mail without line breaks is common) through submission and the MX:
// each is accepted and reads back byte for byte over IMAP, after the
// header fields the server adds. A temporary error here would have the
// sender retry for days and then bounce: the mail would be lost.
func TestLongLines(t *testing.T) {
	e := newEnv(t, 4<<20)
	mx := smtpd.NewMX(smtpd.Config{Store: e.st, Hostname: mxHost, TLS: e.serverTLS, MaxMessageSize: 4 << 20, Log: smtptest.Logger(t)},
		smtpd.MXOptions{Resolver: newFakeDNS()})
	mxAddr := serve(t, mx.Server())
	imapAddr := e.imapServer(t)

	tests := []struct {
		name string
		size int
		via  string // "submission", "mx" or "mx-tls"
	}{
		{"submission 2001 bytes", 2001, "submission"},
		{"submission 300 KB", 300 << 10, "submission"},
		{"submission 1 MB", 1 << 20, "submission"},
		{"mx 2001 bytes", 2001, "mx"},
		{"mx 1 MB", 1 << 20, "mx"},
		{"mx 1 MB after STARTTLS", 1 << 20, "mx-tls"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Repeat("<p>x</p>", tt.size/8+1)[:tt.size]
			from := "alice@example.org"
			if tt.via != "submission" {
				from = "carol@remote.example" // not a forgery of our domain (Junk)
			}
			msg := "From: " + from + "\r\nTo: bob@example.org\r\nSubject: long line " + tt.name + "\r\n\r\n" + body + "\r\n"
			var c *smtp.Client
			var err error
			switch tt.via {
			case "submission":
				c = e.login(t, false, "alice@example.org", e.alicePass)
			case "mx":
				c, err = smtp.Dial(mxAddr)
			case "mx-tls":
				c, err = smtp.DialStartTLS(mxAddr, e.clientTLS)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := send(c, from, []string{"bob@example.org"}, msg); err != nil {
				t.Fatalf("%d-byte line refused: %v", tt.size, err)
			}
			// The connection is still good for the next command.
			if err := c.Noop(); err != nil {
				t.Fatalf("NOOP after the message: %v", err)
			}
			got := fetchOverIMAP(t, e, imapAddr, uint32(i+1))
			if !strings.HasSuffix(got, msg) || !strings.HasPrefix(got, "Received: ") {
				t.Fatalf("message %d over IMAP is not the one sent (%d bytes, want %d after the added fields)", i+1, len(got), len(msg))
			}
		})
	}
}

// fetchOverIMAP returns BODY[] of message seq in bob's INBOX.
func fetchOverIMAP(t *testing.T, e *env, addr string, seq uint32) string {
	t.Helper()
	ic, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: e.clientTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Login("bob@example.org", e.bobPass).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	section := &imap.FetchItemBodySection{}
	msgs, err := ic.Fetch(imap.SeqSetNum(seq), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH %d: %v %v", seq, msgs, err)
	}
	return string(msgs[0].FindBodySection(section))
}

// TestCommandLineLimit: outside a message, an endless line is still cut
// off with a permanent error, so it cannot fill the server's memory.
func TestCommandLineLimit(t *testing.T) {
	e := newEnv(t, 1<<20)
	conn, err := net.Dial("tcp", e.addr587)
	if err != nil {
		t.Fatal(err)
	}
	tp := textproto.NewConn(conn)
	defer tp.Close()
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	// Written in the background: the server stops reading at the limit.
	go func() {
		chunk := strings.Repeat("x", 64<<10)
		conn.Write([]byte("NOOP ")) //nolint:errcheck
		for i := 0; i < 64; i++ {   // 4 MiB, more than the limit
			if _, err := conn.Write([]byte(chunk)); err != nil {
				return
			}
		}
	}()
	code, msg, _ := tp.ReadResponse(0)
	if code != 500 || !strings.Contains(msg, "Too long line") {
		t.Fatalf("endless command line: %d %s, want 500 Too long line", code, msg)
	}
}

// TestBarePostmaster: RCPT TO:<postmaster> without a domain is accepted
// (RFC 5321 §4.5.1) on the MX and on submission, and reaches the
// postmaster of the served domain the host name is in.
func TestBarePostmaster(t *testing.T) {
	e := newMXEnv(t, nil)
	for _, rcpt := range []string{"<postmaster>", "<Postmaster>"} {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		tp := textproto.NewConn(conn)
		if _, _, err := tp.ReadResponse(220); err != nil {
			t.Fatal(err)
		}
		converse(t, tp, "EHLO sender.example", 250, "MAIL FROM:<someone@sender.example>", 250, "RCPT TO:"+rcpt, 250, "DATA", 354)
		converse(t, tp, "From: someone@sender.example\r\nSubject: to the postmaster "+rcpt+"\r\n\r\nhello\r\n.", 250, "QUIT", 221)
		tp.Close()
		// postmaster@example.org has no account or alias: the domain's
		// first account gets it.
		if box, _ := e.find(t, e.alice.ID, "to the postmaster "+rcpt); box == "" {
			t.Errorf("mail to %s did not reach alice", rcpt)
		}
	}
	c := e.login(t, false, "bob@example.org", e.bobPass)
	if err := send(c, "bob@example.org", []string{"postmaster"}, crlf("From: bob@example.org\nSubject: bob to postmaster\n\nhi\n")); err != nil {
		t.Fatalf("submission to <postmaster>: %v", err)
	}
	if box, _ := e.find(t, e.alice.ID, "bob to postmaster"); box != "INBOX" {
		t.Errorf("submitted mail to <postmaster> is in %q, want alice's INBOX", box)
	}
}
