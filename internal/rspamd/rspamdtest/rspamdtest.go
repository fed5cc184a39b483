// Package rspamdtest runs a real rspamd (with the redis-server its Bayes
// statistics live in) from the machine's Debian packages for tests: both
// bound to 127.0.0.1 on random ports, configured in a temporary directory,
// with a DNS server of its own (see startDNS), so rspamd's network rules
// finish at once and nothing leaves the machine. Besides Debian's rules,
// rspamd knows GTUBE and its test variants, and answers "soft reject" to a
// message with the header field "X-Mailstack-Test: soft-reject".
// A missing program fails the test (deploy/install-deps installs them).
package rspamdtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// startTimeout bounds rspamd's start. The first start on a machine
// compiles its regular expressions (tens of seconds on a busy machine);
// later ones load them from a cache shared by all tests.
const startTimeout = 3 * time.Minute

// Prose is an ordinary message body, long enough for rspamd's Bayes
// classifier to learn from (it skips messages of few words).
const Prose = `Hello Bob,

thank you for the notes from Thursday's meeting. I went through the budget
figures again this morning and the numbers for the second quarter look
right to me, apart from the travel costs, which seem to include the
conference in October twice. Could you check with accounting before Friday?
Also, the new printer on the third floor is finally working, so we can print
the handouts there instead of going to the copy shop down the street.

See you at lunch,
Anna`

// Server is a running rspamd and its redis-server.
type Server struct {
	// URL is the scanner (normal worker); ControllerURL the controller.
	URL, ControllerURL string
	// RedisAddr is redis-server's host:port.
	RedisAddr string
	// DNSAddr is the DNS server rspamd asks (host:port, UDP and TCP),
	// for the other parts of a test to ask too.
	DNSAddr string

	dir        string
	normalPort int
	ctrlPort   int
	rspamd     *exec.Cmd
	rspamdDone chan struct{}
}

// Start starts redis-server and rspamd, stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	for _, prog := range []string{"rspamd", "redis-server"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("rspamdtest: %s not found: install Debian's rspamd and redis-server packages (deploy/install-deps)", prog)
		}
	}
	dir := t.TempDir()
	s := &Server{dir: dir}
	for _, sub := range []string{"local.d", "db", "run", "log"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.RedisAddr = startRedis(t, dir)
	s.DNSAddr = startDNS(t)
	cache := filepath.Join(os.TempDir(), fmt.Sprintf("mailstack-rspamd-hs-%d", os.Getuid()))
	if err := os.MkdirAll(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"local.d/options.inc": fmt.Sprintf(`enable_test_patterns = true;
hs_cache_dir = %q;
dns { nameserver = ["%s"]; timeout = 1s; retransmits = 2; }
`, cache, s.DNSAddr),
		"local.d/redis.conf":            fmt.Sprintf("servers = %q;\n", s.RedisAddr),
		"local.d/classifier-bayes.conf": "per_user = true;\n",
		"local.d/logging.inc":           "level = \"info\";\n",
		// A message with the header field "X-Mailstack-Test:
		// soft-reject" gets rspamd's soft reject (as greylisting would).
		"local.d/multimap.conf": fmt.Sprintf(`MAILSTACK_TEST_SOFT_REJECT {
    type = "header";
    header = "X-Mailstack-Test";
    map = %q;
    prefilter = true;
    action = "soft reject";
    message = "Try again later (test)";
}
`, filepath.Join(dir, "soft-reject.map")),
		"soft-reject.map": "soft-reject\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { s.Stop(t) })
	// A port found free may be taken before rspamd binds it: then rspamd
	// exits, and it gets others.
	for try := 1; ; try++ {
		s.normalPort, s.ctrlPort = freePort(t), freePort(t)
		s.URL = fmt.Sprintf("http://127.0.0.1:%d", s.normalPort)
		s.ControllerURL = fmt.Sprintf("http://127.0.0.1:%d", s.ctrlPort)
		conf := fmt.Sprintf(mainConf, s.normalPort, s.ctrlPort)
		if err := os.WriteFile(filepath.Join(dir, "rspamd.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		err := s.launch(t)
		if err == nil {
			return s
		}
		if try == 3 {
			t.Fatal(err)
		}
	}
}

// mainConf replaces Debian's /etc/rspamd/rspamd.conf: the same includes,
// but only a scanner (one process per CPU, rspamd's default) and a
// controller, on the given ports.
const mainConf = `.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    .include "$CONFDIR/logging.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/logging.inc"
}
worker "normal" {
    bind_socket = "127.0.0.1:%d";
    .include "$CONFDIR/worker-normal.inc"
}
worker "controller" {
    bind_socket = "127.0.0.1:%d";
    .include "$CONFDIR/worker-controller.inc"
    count = 1;
}
`

// Start starts rspamd again after Stop, on the same ports, and waits until
// both workers answer.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if s.rspamd != nil {
		t.Fatal("rspamdtest: rspamd already running")
	}
	if err := s.launch(t); err != nil {
		t.Fatal(err)
	}
}

// launch starts rspamd and waits until both workers answer. It fails the
// test if they do not answer in time, and returns an error if rspamd
// exited at start.
func (s *Server) launch(t testing.TB) error {
	t.Helper()
	cmd := exec.Command("rspamd", "-f", "-i", "-c", filepath.Join(s.dir, "rspamd.conf"),
		"--var=LOCAL_CONFDIR="+s.dir, "--var=DBDIR="+filepath.Join(s.dir, "db"),
		"--var=RUNDIR="+filepath.Join(s.dir, "run"), "--var=LOGDIR="+filepath.Join(s.dir, "log"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("rspamdtest: start rspamd: %v", err)
	}
	s.rspamd, s.rspamdDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.rspamdDone) }() //nolint:errcheck // exit seen through rspamdDone
	deadline := time.Now().Add(startTimeout)
	for _, u := range []string{s.URL, s.ControllerURL} {
		for !ping(u) {
			select {
			case <-s.rspamdDone:
				s.rspamd = nil
				return fmt.Errorf("rspamdtest: rspamd exited at start:\n%s\n%s", out.String(), s.logTail())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				s.Stop(t)
				t.Fatalf("rspamdtest: rspamd did not answer on %s within %v:\n%s", u, startTimeout, s.logTail())
			}
		}
	}
	return nil
}

// Stop stops rspamd (redis-server keeps running); the scanner's port is
// then refused.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if s.rspamd == nil {
		return
	}
	pgid := s.rspamd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM) //nolint:errcheck // gone already is fine
	select {
	case <-s.rspamdDone:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL) //nolint:errcheck // as above
		<-s.rspamdDone
	}
	// Workers may outlive the main process by a moment.
	syscall.Kill(-pgid, syscall.SIGKILL) //nolint:errcheck // as above
	s.rspamd = nil
}

// Learned returns how many messages rspamd has learned as spam and as ham
// for user's statistics (per-user Bayes), read from redis.
func (s *Server) Learned(t testing.TB, user string) (spam, ham int) {
	t.Helper()
	vals := s.redis(t, "HMGET", "RS"+user, "learns_spam", "learns_ham")
	n := func(v string) int {
		i, _ := strconv.Atoi(v)
		return i
	}
	return n(vals[0]), n(vals[1])
}

// redis runs one command and returns the elements of its array reply.
func (s *Server) redis(t testing.TB, args ...string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.RedisAddr, 5*time.Second)
	if err != nil {
		t.Fatalf("rspamdtest: redis: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck // a late reply fails the read
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatalf("rspamdtest: redis: %v", err)
	}
	r := bufio.NewReader(c)
	line := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("rspamdtest: redis: %v", err)
		}
		return strings.TrimSuffix(l, "\r\n")
	}
	head := line()
	if !strings.HasPrefix(head, "*") {
		t.Fatalf("rspamdtest: redis %v: %s", args, head)
	}
	n, _ := strconv.Atoi(head[1:])
	out := make([]string, n)
	for i := range out {
		h := line()
		if h == "$-1" {
			continue
		}
		if !strings.HasPrefix(h, "$") {
			t.Fatalf("rspamdtest: redis %v: %s", args, h)
		}
		out[i] = line()
	}
	return out
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log", "rspamd.log"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

func ping(u string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(u + "/ping")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// startRedis runs redis-server on a random loopback port, without
// persistence, until the test ends.
func startRedis(t testing.TB, dir string) string {
	t.Helper()
	for try := 1; ; try++ {
		addr, err := tryRedis(t, dir)
		if err == nil {
			return addr
		}
		if try == 3 {
			t.Fatal(err)
		}
	}
}

// tryRedis starts redis-server on a port found free; it returns an error
// if redis-server exited at start (the port was taken meanwhile).
func tryRedis(t testing.TB, dir string) (string, error) {
	t.Helper()
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", filepath.Join(dir, "db"), "--daemonize", "no")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("rspamdtest: start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() //nolint:errcheck // exit seen through done
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // gone already is fine
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill() //nolint:errcheck // as above
			<-done
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, nil
		}
		select {
		case <-done:
			return "", fmt.Errorf("rspamdtest: redis-server exited at start:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("rspamdtest: redis-server did not listen on %s:\n%s", addr, out.String())
		}
	}
}

// startDNS serves, over UDP and TCP on one loopback port until the test
// ends, the DNS of a sending server at 127.0.0.1: every name under the
// test TLD .example has the address 127.0.0.1 and an MX of its own, every
// address's name is mail.sender.example, and every other name (the
// blocklists') does not exist.
func startDNS(t testing.TB) string {
	t.Helper()
	// The UDP port's number may be taken for TCP: try others.
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ln == nil; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err != nil {
			pc.Close()
			if try == 20 {
				t.Fatal(err)
			}
		}
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		w.WriteMsg(answer(q)) //nolint:errcheck // the resolver retries
	})
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	for _, srv := range servers {
		go srv.ActivateAndServe() //nolint:errcheck // ends with Shutdown
	}
	t.Cleanup(func() {
		for _, srv := range servers {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := srv.ShutdownContext(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Logf("rspamdtest: dns shutdown: %v", err)
			}
			cancel()
		}
	})
	return pc.LocalAddr().String()
}

func answer(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if len(q.Question) != 1 {
		return m.SetRcode(q, dns.RcodeFormatError)
	}
	qq := q.Question[0]
	name := strings.ToLower(qq.Name)
	hdr := dns.RR_Header{Name: qq.Name, Rrtype: qq.Qtype, Class: dns.ClassINET, Ttl: 300}
	switch {
	case qq.Qtype == dns.TypePTR && strings.HasSuffix(name, ".in-addr.arpa."):
		m.SetReply(q)
		m.Answer = append(m.Answer, &dns.PTR{Hdr: hdr, Ptr: "mail.sender.example."})
	case !strings.HasSuffix(name, ".example."):
		m.SetRcode(q, dns.RcodeNameError)
	case qq.Qtype == dns.TypeA:
		m.SetReply(q)
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(127, 0, 0, 1)})
	case qq.Qtype == dns.TypeMX:
		m.SetReply(q)
		m.Answer = append(m.Answer, &dns.MX{Hdr: hdr, Preference: 10, Mx: "mail." + name})
	default:
		m.SetReply(q) // the name exists, without records of this type
	}
	m.Authoritative = true
	return m
}

// freePort returns a loopback TCP port nobody listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
