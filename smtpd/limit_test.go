package smtpd_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailstack/mailstack/internal/smtptest"
	"github.com/mailstack/mailstack/smtpd"
)

// greeting connects to addr over raw TCP and returns the first reply line.
func greeting(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetReadDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	return strings.TrimSpace(line)
}

// submissionServers starts 587 and 465 listeners of one submission backend
// configured by tune, on e's store.
func submissionServers(t *testing.T, e *env, tune func(*smtpd.Config)) (addr587, addr465 string) {
	t.Helper()
	cfg := smtpd.Config{Store: e.st, Hostname: "mail.example.org", TLS: e.serverTLS, Log: smtptest.Logger(t)}
	tune(&cfg)
	sub := smtpd.NewSubmission(cfg)
	return serve(t, sub.Server(false)), serve(t, sub.Server(true))
}

func TestSubmissionConnectionLimits(t *testing.T) {
	e := newEnv(t, 1<<20)
	t.Run("per IP", func(t *testing.T) {
		addr587, addr465 := submissionServers(t, e, func(c *smtpd.Config) { c.MaxConnsPerIP = 2 })
		if g := greeting(t, addr587); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("first connection: %q", g)
		}
		// 587 and 465 share the per-IP count.
		c465, err := smtp.DialTLS(addr465, e.clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c465.Close()
		if err := c465.Hello("client.example"); err != nil {
			t.Fatal(err)
		}
		if g := greeting(t, addr587); !strings.HasPrefix(g, "421 4.7.0 Too many connections") {
			t.Fatalf("third connection from one address got %q, want 421 4.7.0", g)
		}
		// go-smtp's client sees the refusal as an SMTP error.
		if err := hello(addr587); smtpCode(err) != 421 {
			t.Fatalf("go-smtp client: %v, want 421", err)
		}
		// Closing a connection frees its slot.
		c465.Quit() //nolint:errcheck
		smtptest.WaitFor(t, "a free slot", func() bool { return hello(addr587) == nil })
	})
	t.Run("total per listener", func(t *testing.T) {
		addr587, addr465 := submissionServers(t, e, func(c *smtpd.Config) { c.MaxConnections = 2; c.MaxConnsPerIP = 100 })
		for range 2 {
			if g := greeting(t, addr587); !strings.HasPrefix(g, "220 ") {
				t.Fatalf("connection within the limit: %q", g)
			}
		}
		if g := greeting(t, addr587); !strings.HasPrefix(g, "421 4.7.0 Too many connections") {
			t.Fatalf("connection over the total got %q, want 421 4.7.0", g)
		}
		// Each listener has its own total.
		c, err := smtp.DialTLS(addr465, e.clientTLS)
		if err != nil {
			t.Fatalf("465 refused while only 587 is full: %v", err)
		}
		c.Close()
	})
	t.Run("defaults", func(t *testing.T) {
		// 60 connections from one address: the first 50 are greeted.
		addr587, _ := submissionServers(t, e, func(*smtpd.Config) {})
		var ok, refused int
		for range 60 {
			switch g := greeting(t, addr587); {
			case strings.HasPrefix(g, "220 "):
				ok++
			case strings.HasPrefix(g, "421 4.7.0 Too many connections"):
				refused++
			default:
				t.Fatalf("unexpected greeting %q", g)
			}
		}
		if ok != smtpd.DefaultSubmissionMaxConnsPerIP || refused != 60-ok {
			t.Fatalf("%d greeted, %d refused; want %d greeted", ok, refused, smtpd.DefaultSubmissionMaxConnsPerIP)
		}
	})
}

func TestMXTotalConnections(t *testing.T) {
	e := newMXEnv(t, func(c *smtpd.Config, o *smtpd.MXOptions) { c.MaxConnections = 2; o.MaxConnsPerIP = 100 })
	for range 2 {
		if g := greeting(t, e.addr); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("connection within the limit: %q", g)
		}
	}
	if g := greeting(t, e.addr); !strings.HasPrefix(g, "421 4.7.0 Too many connections") {
		t.Fatalf("connection over the total got %q, want 421 4.7.0", g)
	}
}

// TestShutdownBeforeServe: a Serve that starts after Shutdown (its
// goroutine was slow to run) returns at once instead of accepting forever.
func TestShutdownBeforeServe(t *testing.T) {
	e := newEnv(t, 64<<10)
	cfg := smtpd.Config{Store: e.st, Hostname: mxHost, TLS: e.serverTLS, Log: smtptest.Logger(t)}
	srv := smtpd.NewMX(cfg, smtpd.MXOptions{Resolver: newFakeDNS()}).Server()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		l.Close()
		t.Fatal("Serve after Shutdown kept accepting")
	}
}
