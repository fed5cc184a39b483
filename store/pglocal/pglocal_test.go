package pglocal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func start(t *testing.T, ctx context.Context, dir string) *Cluster {
	t.Helper()
	c, err := Start(ctx, dir, Options{NoFsync: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// query opens a connection on database and returns the result of one
// single-value query.
func query(t *testing.T, ctx context.Context, c *Cluster, database, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, c.URL(database))
	if err != nil {
		t.Fatalf("connect to %s: %v", database, err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStartStopRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")

	c := start(t, ctx, dir)
	if err := c.CreateDatabase(ctx, "mailstack"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateDatabase(ctx, "mailstack"); err != nil {
		t.Fatalf("second CreateDatabase: %v", err)
	}
	conn, err := pgx.Connect(ctx, c.URL("mailstack"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if got := query(t, ctx, c, "mailstack", "SHOW server_encoding"); got != "UTF8" {
		t.Errorf("server_encoding = %q, want UTF8", got)
	}
	// Byte-order sorting, Unicode character classes: pg_trgm must see a
	// Cyrillic word as a word (three trigrams of letters, not none).
	if got := query(t, ctx, c, "mailstack", "SHOW lc_collate"); got != "C" {
		t.Errorf("lc_collate = %q, want C", got)
	}
	if got := query(t, ctx, c, "mailstack", "SHOW lc_ctype"); got != textCtype {
		t.Errorf("lc_ctype = %q, want %s", got, textCtype)
	}
	if got := query(t, ctx, c, "mailstack", "SELECT upper('встреча')"); got != "ВСТРЕЧА" {
		t.Errorf("upper('встреча') = %q: the database does not classify Cyrillic letters", got)
	}
	if got := query(t, ctx, c, "mailstack", "SHOW listen_addresses"); got != "" {
		t.Errorf("listen_addresses = %q, want empty", got)
	}
	if got := query(t, ctx, c, "mailstack", "SHOW max_connections"); got != "200" {
		t.Errorf("max_connections = %q, want 200", got)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid after Stop: %v", err)
	}

	// Restart on the existing cluster: no initdb, data kept.
	c = start(t, ctx, dir)
	if got := query(t, ctx, c, "mailstack", "SELECT v FROM t"); got != "kept" {
		t.Errorf("after restart got %q, want kept", got)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStartAfterKill checks that a cluster whose postmaster was SIGKILLed
// (stale postmaster.pid, crash recovery) starts again.
func TestStartAfterKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")

	c := start(t, ctx, dir)
	pidFile, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	if err != nil || pid != c.proc.Pid {
		t.Fatalf("postmaster.pid holds %q, want %d", pidFile, c.proc.Pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	c.Stop(ctx) //nolint:errcheck // already dead; releases the socket dir

	c = start(t, ctx, dir)
	if got := query(t, ctx, c, "postgres", "SELECT 'up'"); got != "up" {
		t.Errorf("got %q", got)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLongDataDir checks the socket moves out of a data dir whose path is
// too long for a unix socket, and is removed by Stop.
func TestLongDataDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100), "data")

	c := start(t, ctx, dir)
	if c.sockDir == dir || !c.ownSockDir {
		t.Fatalf("socket dir %s for long data dir", c.sockDir)
	}
	if got := query(t, ctx, c, "postgres", "SELECT 'up'"); got != "up" {
		t.Errorf("got %q", got)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.sockDir); !os.IsNotExist(err) {
		t.Errorf("socket dir left behind: %v", err)
	}
}

func TestStartFailureReportsLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")
	c := start(t, ctx, dir)
	defer c.Stop(ctx) //nolint:errcheck

	// A second server on the same data dir must fail, quoting postgres.
	_, err := Start(ctx, dir, Options{NoFsync: true, Logger: testLogger(t)})
	if err == nil {
		t.Fatal("second Start on a running cluster succeeded")
	}
	if !strings.Contains(err.Error(), "postmaster.pid") {
		t.Errorf("error lacks postgres' log: %v", err)
	}
}

// TestPostgresDiesWithParent runs Start in a child test process, SIGKILLs
// that process and checks that postgres exits too (Pdeathsig).
func TestPostgresDiesWithParent(t *testing.T) {
	if dir := os.Getenv("PGLOCAL_TEST_HELPER_DIR"); dir != "" {
		c := start(t, context.Background(), dir)
		fmt.Printf("pid=%d\n", c.proc.Pid)
		time.Sleep(time.Minute) // killed by the parent test
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPostgresDiesWithParent$")
	cmd.Env = append(os.Environ(), "PGLOCAL_TEST_HELPER_DIR="+filepath.Join(t.TempDir(), "data"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := 0
	sc := bufio.NewScanner(out)
	for pid == 0 && sc.Scan() {
		fmt.Sscanf(sc.Text(), "pid=%d", &pid) //nolint:errcheck
	}
	if pid == 0 {
		cmd.Process.Kill() //nolint:errcheck
		cmd.Wait()         //nolint:errcheck
		t.Fatal("helper did not start postgres")
	}
	cmd.Process.Kill() //nolint:errcheck
	cmd.Wait()         //nolint:errcheck
	for syscall.Kill(pid, 0) == nil {
		// Zombie until reaped by init; a zombie has exited, which is enough.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
			break
		}
		if ctx.Err() != nil {
			syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck
			t.Fatalf("postgres (pid %d) survived its parent", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSharedRoles checks that only the owner lends its server: an owner
// waits for a guest's private server to stop, guests use the owner's
// server and leave it running, and a second owner is refused.
func TestSharedRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")
	use := func(role Role, log *slog.Logger) (*Shared, error) {
		return Use(ctx, dir, role, Options{NoFsync: true, Logger: log})
	}
	ping := func(sh *Shared) error {
		conn, err := pgx.Connect(ctx, sh.URL("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx)
	}

	// A guest with nobody else around runs a private server.
	g1, err := use(Guest, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if !g1.Started() {
		t.Fatal("first guest did not start a server")
	}
	// An owner arriving now waits for it instead of using it.
	var ownerLog lockedBuffer
	type result struct {
		sh  *Shared
		err error
	}
	ownerc := make(chan result, 1)
	go func() {
		sh, err := use(Owner, slog.New(slog.NewTextHandler(&ownerLog, nil)))
		ownerc <- result{sh, err}
	}()
	for !strings.Contains(ownerLog.String(), "waiting for it to finish") {
		select {
		case r := <-ownerc:
			t.Fatalf("owner did not wait for the guest's server: %+v", r)
		case <-ctx.Done():
			t.Fatal("owner never said it waits")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := ping(g1); err != nil {
		t.Fatalf("guest lost its server while the owner waits: %v", err)
	}
	if err := g1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-ownerc
	if r.err != nil {
		t.Fatal(r.err)
	}
	owner := r.sh
	if !owner.Started() {
		t.Fatal("owner did not start its server")
	}
	// Guests now use the owner's server, and leaving does not stop it.
	for i := 0; i < 2; i++ {
		g, err := use(Guest, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if g.Started() || g.URL("x") != owner.URL("x") {
			t.Fatalf("guest %d did not attach to the owner's server (started %v, %s)", i, g.Started(), g.URL("x"))
		}
		if err := g.CreateDatabase(ctx, "mailstack"); err != nil {
			t.Fatal(err)
		}
		if err := g.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ping(owner); err != nil {
			t.Fatalf("owner's server gone after guest %d left: %v", i, err)
		}
	}
	if _, err := use(Owner, testLogger(t)); !errors.Is(err, ErrOwned) {
		t.Fatalf("second owner: %v, want ErrOwned", err)
	}
	if err := owner.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("server still running after the owner closed: %v", err)
	}
	// With the owner gone, a guest runs its own again.
	g, err := use(Guest, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if !g.Started() {
		t.Fatal("guest after the owner left did not start a server")
	}
	if err := g.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits until log contains text.
func waitLog(t *testing.T, ctx context.Context, log *lockedBuffer, text string) {
	t.Helper()
	for !strings.Contains(log.String(), text) {
		select {
		case <-ctx.Done():
			t.Fatalf("never logged %q; log:\n%s", text, log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestOwnerCloseWaitsForGuests checks that the owner does not stop its
// server under a guest using it (an admin command while serve exits): its
// Close waits until the guest is done, a guest arriving meanwhile is not
// let in but runs its own server once the owner is gone, and past
// GuestWait the owner stops the server anyway and says so.
func TestOwnerCloseWaitsForGuests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")
	type result struct {
		sh  *Shared
		err error
	}
	setup := func(guestWait time.Duration) (owner, guest *Shared, ownerLog *lockedBuffer, conn *pgx.Conn) {
		t.Helper()
		ownerLog = &lockedBuffer{}
		owner, err := Use(ctx, dir, Owner, Options{NoFsync: true, GuestWait: guestWait, Logger: slog.New(slog.NewTextHandler(ownerLog, nil))})
		if err != nil {
			t.Fatal(err)
		}
		guest, err = Use(ctx, dir, Guest, Options{NoFsync: true, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if guest.Started() {
			t.Fatal("guest did not attach to the owner's server")
		}
		if conn, err = pgx.Connect(ctx, guest.URL("postgres")); err != nil {
			t.Fatal(err)
		}
		return owner, guest, ownerLog, conn
	}

	t.Run("waits", func(t *testing.T) {
		owner, guest, ownerLog, conn := setup(time.Minute)
		closed := make(chan error, 1)
		go func() { closed <- owner.Close(ctx) }()
		waitLog(t, ctx, ownerLog, "waiting for other processes")
		var lateLog lockedBuffer
		latec := make(chan result, 1)
		go func() {
			sh, err := Use(ctx, dir, Guest, Options{NoFsync: true, Logger: slog.New(slog.NewTextHandler(&lateLog, nil))})
			latec <- result{sh, err}
		}()
		waitLog(t, ctx, &lateLog, "waiting for it to finish")
		if err := conn.Ping(ctx); err != nil {
			t.Fatalf("the owner stopped its server under a guest: %v", err)
		}
		select {
		case err := <-closed:
			t.Fatalf("owner's Close returned (%v) while a guest used its server", err)
		default:
		}
		conn.Close(ctx)
		if err := guest.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ownerLog.String(), "anyway") {
			t.Errorf("owner gave up waiting: %s", ownerLog.String())
		}
		late := <-latec
		if late.err != nil {
			t.Fatal(late.err)
		}
		if !late.sh.Started() {
			t.Error("the guest that arrived while the owner closed attached to the dying server")
		}
		if err := late.sh.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		owner, guest, ownerLog, conn := setup(200 * time.Millisecond)
		defer conn.Close(ctx)
		if err := owner.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(ownerLog.String(), "stopping it anyway") {
			t.Errorf("no word of stopping under a guest: %s", ownerLog.String())
		}
		if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !os.IsNotExist(err) {
			t.Fatalf("server still running after the owner closed: %v", err)
		}
		if err := guest.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStartWhileOldPostmasterExits checks that Start retries while
// postmaster.pid names a live process (a crashed process's postmaster
// still exiting) and starts once that process is gone.
func TestStartWhileOldPostmasterExits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")
	c := start(t, ctx, dir)
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// The stand-in for the old postmaster runs as postgres does: postgres
	// takes a pid it may not signal (EPERM) for a stale one.
	cred, err := RunAs()
	if err != nil {
		t.Fatal(err)
	}
	old := exec.Command("sleep", "60")
	old.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	go old.Wait()            //nolint:errcheck // reaped at once: a zombie still counts as alive
	defer old.Process.Kill() //nolint:errcheck
	pidFile := filepath.Join(dir, "postmaster.pid")
	if err := os.WriteFile(pidFile, fmt.Appendf(nil, "%d\n%s\n", old.Process.Pid, dir), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		if err := os.Chown(pidFile, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	var log lockedBuffer
	startc := make(chan error, 1)
	go func() {
		c, err := Start(ctx, dir, Options{NoFsync: true, Logger: slog.New(slog.NewTextHandler(&log, nil))})
		if err == nil {
			err = c.Stop(ctx)
		}
		startc <- err
	}()
	for !strings.Contains(log.String(), "retrying") {
		select {
		case err := <-startc:
			t.Fatalf("Start while postmaster.pid names a live process: %v, want a retry", err)
		case <-ctx.Done():
			t.Fatal("Start never retried")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := old.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-startc; err != nil {
		t.Fatalf("Start after the old process exited: %v", err)
	}
}

// processUID returns the real user id of a running process.
func processUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}

// TestUnprivileged exercises both ways Start runs postgres: as root it
// must drop to the "postgres" OS user; as any other user it runs postgres
// as itself. Run as root, the test also re-runs itself as "nobody" (a
// copy of the test binary, in a directory that user owns), so that the
// non-root path is tested on root-only machines too.
func TestUnprivileged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := os.Getenv("PGLOCAL_TEST_UNPRIVILEGED_DIR")
	switch {
	case dir == "":
		dir = filepath.Join(t.TempDir(), "data")
	case os.Geteuid() == 0:
		t.Fatal("the unprivileged helper runs as root")
	}
	c := start(t, ctx, dir)
	want := os.Geteuid()
	if want == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		want, _ = strconv.Atoi(u.Uid)
	}
	if got := processUID(t, c.proc.Pid); got != want {
		t.Errorf("postgres runs as uid %d, want %d (we are %d)", got, want, os.Geteuid())
	}
	if got := query(t, ctx, c, "postgres", "SELECT 'up'"); got != "up" {
		t.Errorf("got %q", got)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("PGLOCAL_TEST_UNPRIVILEGED_DIR") != "" {
		fmt.Printf("unprivileged start ok as uid %d\n", os.Geteuid())
		return
	}
	if os.Geteuid() != 0 {
		return // the path above was the unprivileged one
	}

	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no unprivileged user to test the non-root path with: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	// t.TempDir is private to root; this directory belongs to nobody.
	base, err := os.MkdirTemp("", "pglocal-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	bin := filepath.Join(base, "pglocal.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(base, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestUnprivileged$", "-test.v")
	cmd.Dir = base
	cmd.Env = append(os.Environ(), "PGLOCAL_TEST_UNPRIVILEGED_DIR="+filepath.Join(base, "data"), "HOME="+base, "TMPDIR="+base)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("unprivileged start ok as uid %d", uid)) {
		t.Fatalf("pglocal as %s (uid %d): %v\n%s", nobody.Username, uid, err, out)
	}
	t.Logf("re-run as %s: %s", nobody.Username, regexp.MustCompile(`unprivileged start ok as uid \d+`).Find(out))
}

// TestLineLevel checks how postgres' output is logged: the FATAL lines of
// every start (our readiness probes) and stop are debug; a real FATAL is
// shown at info.
func TestLineLevel(t *testing.T) {
	tests := []struct {
		line string
		want slog.Level
	}{
		{"2026-12-05 18:00:00.000 UTC [7] LOG:  database system is ready to accept connections", slog.LevelDebug},
		{"2026-12-05 18:00:00.000 UTC [8] FATAL:  the database system is starting up", slog.LevelDebug},
		{"2026-12-05 18:00:00.000 UTC [8] FATAL:  the database system is shutting down", slog.LevelDebug},
		{"2026-12-05 18:00:00.000 UTC [9] FATAL:  terminating connection due to administrator command", slog.LevelDebug},
		{`2026-12-05 18:00:00.000 UTC [9] FATAL:  could not open file "global/pg_filenode.map": Permission denied`, slog.LevelInfo},
		{"2026-12-05 18:00:00.000 UTC [9] PANIC:  could not write to file", slog.LevelInfo},
		{"2026-12-05 18:00:00.000 UTC [9] ERROR:  duplicate key value violates unique constraint", slog.LevelInfo},
		{"2026-12-05 18:00:00.000 UTC [9] WARNING:  there is no transaction in progress", slog.LevelInfo},
	}
	for _, tt := range tests {
		if got := lineLevel(tt.line); got != tt.want {
			t.Errorf("%s: level %v, want %v", tt.line, got, tt.want)
		}
	}
}
