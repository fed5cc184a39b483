package mailimport

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mailstack/mailstack/internal/tlsconfig"
)

// fakeIMAP is a scripted IMAP server on 127.0.0.1 (plain text, which the
// importer allows to a loopback address) that answers the importer's few
// commands with whatever a test wants: the hostile or broken source the
// tests of hostile input need, which Dovecot will not play.
type fakeIMAP struct {
	// greeting replaces the normal one ("* OK ...") when set.
	greeting string
	// silent: accept connections and never say a word.
	silent bool
	// tls: implicit TLS (imaps), with a certificate of its own.
	tls bool
	// list is the LIST answer, one "(attrs) delim name" per line.
	list []string
	// msgs of every folder (the fake has one set for all).
	msgs []fakeMsg
	// uidValidity of every folder; zero: 7.
	uidValidity uint32
	// meta, if set, writes the untagged answer of the first pass (UID
	// FETCH n:* (UID FLAGS ...)) instead of one line per message of msgs.
	meta func(w *bufio.Writer)
	// on, if it has the command's verb (upper case; "UID" for UID FETCH),
	// answers it instead; hang up: close the connection after.
	on map[string]func(w *bufio.Writer, tag, args string) (hangUp bool)

	addr  string
	roots *x509.CertPool // trusts the certificate, with tls
	mu    sync.Mutex
	cmds  []string // every command received, in order
}

type fakeMsg struct {
	uid   uint32
	flags string // "(\Seen)"; empty: "()"
	date  string // INTERNALDATE; empty: a fixed one
	body  string
}

// startFake serves f on a random port until the test ends.
func startFake(t testing.TB, f *fakeIMAP) *fakeIMAP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	if f.tls {
		cfg, err := tlsconfig.SelfSigned(t.TempDir(), []string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		f.roots = x509.NewCertPool()
		f.roots.AddCert(cert)
		ln = tls.NewListener(ln, cfg)
	}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				f.serve(c)
			}()
		}
	}()
	return f
}

// source is the fake as the importer's source, with the given options.
func (f *fakeIMAP) source(opts IMAPSource) IMAPSource {
	opts.URL, opts.Password = "imap://u@"+f.addr, "p"
	if f.tls {
		opts.URL = "imaps://u@" + f.addr
		opts.TLSConfig = &tls.Config{RootCAs: f.roots}
	}
	return opts
}

func (f *fakeIMAP) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

func (f *fakeIMAP) serve(c net.Conn) {
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	if f.silent {
		r.ReadByte() //nolint:errcheck // until the client goes
		return
	}
	greeting := f.greeting
	if greeting == "" {
		greeting = "* OK [CAPABILITY IMAP4rev1] fake ready"
	}
	fmt.Fprintf(w, "%s\r\n", greeting)
	w.Flush()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.mu.Lock()
		f.cmds = append(f.cmds, line)
		f.mu.Unlock()
		tag, rest, _ := strings.Cut(line, " ")
		verb, args, _ := strings.Cut(rest, " ")
		verb = strings.ToUpper(verb)
		if h := f.on[verb]; h != nil {
			hangUp := h(w, tag, args)
			if w.Flush() != nil || hangUp {
				return
			}
			continue
		}
		switch verb {
		case "CAPABILITY":
			fmt.Fprintf(w, "* CAPABILITY IMAP4rev1\r\n%s OK done\r\n", tag)
		case "LOGIN":
			fmt.Fprintf(w, "%s OK [CAPABILITY IMAP4rev1] logged in\r\n", tag)
		case "LIST":
			for _, l := range f.list {
				fmt.Fprintf(w, "* LIST %s\r\n", l)
			}
			fmt.Fprintf(w, "%s OK done\r\n", tag)
		case "EXAMINE", "SELECT":
			next := uint32(1)
			for _, m := range f.msgs {
				next = max(next, m.uid+1)
			}
			uv := f.uidValidity
			if uv == 0 {
				uv = 7
			}
			fmt.Fprintf(w, "* %d EXISTS\r\n* OK [UIDVALIDITY %d] v\r\n* OK [UIDNEXT %d] n\r\n%s OK [READ-ONLY] done\r\n", len(f.msgs), uv, next, tag)
		case "UID":
			f.fetch(w, tag, args)
		case "LOGOUT":
			fmt.Fprintf(w, "* BYE bye\r\n%s OK done\r\n", tag)
			w.Flush()
			return
		default:
			fmt.Fprintf(w, "%s BAD unknown command\r\n", tag)
		}
		if w.Flush() != nil {
			return
		}
	}
}

// fetch answers UID FETCH: the first pass (FLAGS) or bodies (BODY.PEEK[]).
func (f *fakeIMAP) fetch(w *bufio.Writer, tag, args string) {
	f.answerFetch(w, tag, args, func(uint32) bool { return true })
}

// answerFetch answers UID FETCH, bodies only of the messages whose UID
// send accepts (it may write part of one and return false).
func (f *fakeIMAP) answerFetch(w *bufio.Writer, tag, args string, send func(uid uint32) bool) {
	set, items, _ := strings.Cut(strings.TrimPrefix(args, "FETCH "), " ")
	if !strings.Contains(items, "BODY") {
		if f.meta != nil {
			f.meta(w)
		} else {
			for i, m := range f.msgs {
				if inSet(set, m.uid) {
					item := metaItems(m)
					if !strings.Contains(items, "INTERNALDATE") { // as asked
						item = metaItemsNoDate(m)
					}
					fmt.Fprintf(w, "* %d FETCH %s\r\n", i+1, item)
				}
			}
		}
		fmt.Fprintf(w, "%s OK done\r\n", tag)
		return
	}
	for i, m := range f.msgs {
		if !inSet(set, m.uid) {
			continue
		}
		fmt.Fprintf(w, "* %d FETCH (UID %d BODY[] {%d}\r\n", i+1, m.uid, len(m.body))
		if !send(m.uid) {
			return
		}
		fmt.Fprintf(w, "%s)\r\n", m.body)
	}
	fmt.Fprintf(w, "%s OK done\r\n", tag)
}

// metaItems is a message's answer to the first pass.
func metaItems(m fakeMsg) string {
	flags, date := m.flags, m.date
	if flags == "" {
		flags = "()"
	}
	if date == "" {
		date = `"04-Mar-1999 05:06:07 +0000"`
	}
	return fmt.Sprintf("(UID %d FLAGS %s INTERNALDATE %s RFC822.SIZE %d)", m.uid, flags, date, len(m.body))
}

// metaItems without INTERNALDATE.
func metaItemsNoDate(m fakeMsg) string {
	flags := m.flags
	if flags == "" {
		flags = "()"
	}
	return fmt.Sprintf("(UID %d FLAGS %s RFC822.SIZE %d)", m.uid, flags, len(m.body))
}

// inSet reports whether uid is in an IMAP UID set ("1:3,5,7:*").
func inSet(set string, uid uint32) bool {
	for _, r := range strings.Split(set, ",") {
		lo, hi, isRange := strings.Cut(r, ":")
		a, _ := strconv.ParseUint(lo, 10, 32)
		if !isRange {
			if uint32(a) == uid {
				return true
			}
			continue
		}
		b := uint64(1<<32 - 1)
		if hi != "*" {
			b, _ = strconv.ParseUint(hi, 10, 32)
		}
		if a > b {
			a, b = b, a
		}
		if uint64(uid) >= a && uint64(uid) <= b {
			return true
		}
	}
	return false
}
