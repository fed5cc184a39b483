package smtpd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/smtpd"
	"github.com/mailstack/mailstack/store"
)

// logLines collects a JSON slog handler's output; the servers' goroutines
// write while the test reads.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// logger returns a logger writing to l at every level, with the service
// key as cmd/mailstack adds it.
func (l *logLines) logger(service string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})).With("service", service)
}

// logLine is one decoded line: its keys and their values as text.
type logLine map[string]string

func (l logLine) String() string {
	b, _ := json.Marshal(map[string]string(l))
	return string(b)
}

// lines decodes every line written so far, failing the test on a line
// that names a key twice (slog writes both; readers keep one).
func (l *logLines) lines(t testing.TB) []logLine {
	t.Helper()
	l.mu.Lock()
	data := append([]byte(nil), l.buf.Bytes()...)
	l.mu.Unlock()
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, decodeLogLine(t, sc.Bytes()))
	}
	return out
}

func decodeLogLine(t testing.TB, b []byte) logLine {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	line := logLine{}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("log line %s: not a JSON object", b)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("log line %s: %v", b, err)
		}
		key := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("log line %s: %v", b, err)
		}
		if _, dup := line[key]; dup {
			t.Errorf("log line names %q twice: %s", key, b)
		}
		line[key] = fmt.Sprint(v)
	}
	return line
}

// connIDPattern is a connection id: 12 hex digits, as imapd's.
var connIDPattern = regexp.MustCompile(`^[0-9a-f]{12}$`)

// sessionLines returns the lines of the connection whose "connect" line is
// the first such line in lines, checking that each carries that conn, the
// service and remote 127.0.0.1.
func sessionLines(t *testing.T, lines []logLine, service string) []logLine {
	t.Helper()
	conn := ""
	var out []logLine
	for _, l := range lines {
		if conn == "" && l["msg"] == "connect" {
			conn = l["conn"]
			if !connIDPattern.MatchString(conn) {
				t.Fatalf("connect line's conn is not 12 hex digits: %v", l)
			}
		}
		if conn == "" || l["conn"] != conn {
			continue
		}
		if l["remote"] != "127.0.0.1" || l["service"] != service {
			t.Errorf("line lacks remote=127.0.0.1 or service=%s: %v", service, l)
		}
		out = append(out, l)
	}
	if conn == "" {
		t.Fatalf("no connect line in %v", lines)
	}
	return out
}

// wantMessages checks that lines hold the messages want, in that order, at
// the given levels ("msg LEVEL"), possibly among others.
func wantMessages(t *testing.T, lines []logLine, want ...string) {
	t.Helper()
	i := 0
	for _, l := range lines {
		if i < len(want) && l["msg"]+" "+l["level"] == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Fatalf("no line %q (in order %q) among %v", want[i], want, lines)
	}
}

// TestSessionLogKeys: every line about a session carries its connection's
// conn (one per TCP connection, kept across STARTTLS) and remote, and,
// once a submission session has logged in, account, as imapd's lines do.
func TestSessionLogKeys(t *testing.T) {
	e := newEnv(t, 1<<20)

	t.Run("submission", func(t *testing.T) {
		logs := &logLines{}
		addr587, addr465 := submissionServers(t, e, func(c *smtpd.Config) { c.Log = logs.logger("submission") })
		conns := map[string]string{} // conn → session
		for _, tc := range []struct {
			name        string
			implicitTLS bool
			acc         *store.Account
			pass        string
			to          string
		}{
			{"587 STARTTLS", false, e.alice, e.alicePass, "bob@example.org"},
			{"465 TLS", true, e.bob, e.bobPass, "alice@example.org"},
		} {
			before := len(logs.lines(t))
			var c *smtp.Client
			var err error
			if tc.implicitTLS {
				c, err = smtp.DialTLS(addr465, e.clientTLS)
			} else {
				c, err = smtp.DialStartTLS(addr587, e.clientTLS)
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if err := c.Auth(sasl.NewPlainClient("", tc.acc.Address, tc.pass)); err != nil {
				t.Fatalf("%s: auth: %v", tc.name, err)
			}
			msg := crlf("From: " + tc.acc.Address + "\nTo: " + tc.to + "\nSubject: log keys\n\nhello\n")
			if err := send(c, tc.acc.Address, []string{tc.to}, msg); err != nil {
				t.Fatalf("%s: send: %v", tc.name, err)
			}
			// The server logs login before its 235 and submitted before
			// its 250, so both lines are written by now.
			lines := sessionLines(t, logs.lines(t)[before:], "submission")
			c.Close()
			wantMessages(t, lines, "connect DEBUG", "login DEBUG", "submitted DEBUG")
			loggedIn := false
			for _, l := range lines {
				loggedIn = loggedIn || l["msg"] == "login"
				want := ""
				if loggedIn {
					want = tc.acc.Address
				}
				if l["account"] != want {
					t.Errorf("%s: account=%q, want %q (logged in: %v): %v", tc.name, l["account"], want, loggedIn, l)
				}
			}
			conn := lines[0]["conn"]
			if prev, dup := conns[conn]; dup {
				t.Fatalf("sessions %s and %s share conn %s", prev, tc.name, conn)
			}
			conns[conn] = tc.name
		}
	})

	t.Run("refused connection", func(t *testing.T) {
		// Refused before any session exists: remote, and no conn.
		logs := &logLines{}
		addr587, _ := submissionServers(t, e, func(c *smtpd.Config) { c.Log = logs.logger("submission"); c.MaxConnsPerIP = 1 })
		greeting(t, addr587)
		if g := greeting(t, addr587); !strings.HasPrefix(g, "421 ") {
			t.Fatalf("second connection: %q, want 421", g)
		}
		// The line is logged before the 421 is written.
		var refused []logLine
		for _, l := range logs.lines(t) {
			if strings.HasPrefix(l["msg"], "smtp: connection refused") {
				refused = append(refused, l)
			}
		}
		if len(refused) != 1 {
			t.Fatalf("%d refusal lines, want 1: %v", len(refused), refused)
		}
		if l := refused[0]; l["remote"] != "127.0.0.1" || l["level"] != "WARN" || l["conn"] != "" || l["ip"] != "" {
			t.Fatalf("refusal line: %v, want level WARN, remote=127.0.0.1, no conn or ip", l)
		}
	})

	t.Run("go-smtp error log", func(t *testing.T) {
		// A client speaking plain text to 465 fails the TLS handshake:
		// go-smtp reports it naming only the address, and the line still
		// gets the connection's keys.
		logs := &logLines{}
		srv := smtpd.NewSubmission(smtpd.Config{Store: e.st, Hostname: "mail.example.org", TLS: e.serverTLS,
			Log: logs.logger("submission")}).Server(true)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(l) }()
		nc, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(nc, "EHLO client.example\r\n")        //nolint:errcheck // the server's reaction is what counts
		nc.SetReadDeadline(time.Now().Add(30 * time.Second)) //nolint:errcheck // a guard against hanging, not a check
		io.Copy(io.Discard, nc)                              //nolint:errcheck // until the server closes
		nc.Close()
		// The server closed the connection in its handler, so the handler
		// is counted; Shutdown waits for it, and its log line.
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		lines := sessionLines(t, logs.lines(t), "submission")
		wantMessages(t, lines, "connect DEBUG", "smtp server ERROR")
		for _, l := range lines {
			if l["msg"] == "smtp server" && !strings.Contains(l["err"], "tls") {
				t.Errorf("go-smtp's line: %v, want its text under err", l)
			}
		}
	})

	t.Run("mx", func(t *testing.T) {
		logs := &logLines{}
		mx := newMXEnv(t, func(c *smtpd.Config, _ *smtpd.MXOptions) { c.Log = logs.logger("mx") })
		c := mx.dial(t, "client.example", false)
		msg := crlf("From: someone@sender.example\nTo: alice@example.org\nSubject: log keys\n\nhello\n")
		if err := send(c, "someone@sender.example", []string{"alice@example.org"}, msg); err != nil {
			t.Fatal(err)
		}
		// "mx delivered" is logged before the 250.
		lines := sessionLines(t, logs.lines(t), "mx")
		wantMessages(t, lines, "connect DEBUG", "mx delivered INFO")
		for _, l := range lines {
			if l["account"] != "" || l["ip"] != "" {
				t.Errorf("MX line with account or ip: %v", l)
			}
		}
	})
}
