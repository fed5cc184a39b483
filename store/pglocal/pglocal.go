// Package pglocal runs a private PostgreSQL cluster from the PostgreSQL
// binaries installed on the machine: initdb on first use, then a postgres
// server listening only on a unix socket. `mailstack serve` uses it when no
// database URL is configured, and the test harness (store/storetest) runs one
// cluster per test binary with it.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Options for Start. The zero value gives production-safe defaults.
type Options struct {
	// BinDir is the directory holding initdb and postgres. Default: the
	// newest /usr/lib/postgresql/*/bin (Debian, Ubuntu), else
	// /usr/pgsql-*/bin (RHEL), else the directory of postgres on PATH.
	BinDir string
	// NoFsync trades durability for speed (fsync, synchronous_commit and
	// full_page_writes off). For tests only: a crash can corrupt the cluster.
	NoFsync bool
	// MaxConnections is postgres' max_connections (default 200, headroom for
	// tests and servers that open many pools).
	MaxConnections int
	// Logger receives postgres' log output (see lineLevel: debug for
	// routine lines, info for warnings and errors). Default:
	// slog.Default().
	Logger *slog.Logger
	// Wait bounds how long Use waits for another process's private
	// server to stop (default 2 minutes).
	Wait time.Duration
	// GuestWait bounds how long an Owner's Close waits for the guests
	// using its server to finish before it stops the server under them
	// (default 30 s).
	GuestWait time.Duration
}

// Cluster is a running private PostgreSQL server. Its methods are safe for
// concurrent use.
type Cluster struct {
	dataDir    string
	sockDir    string
	ownSockDir bool // sockDir is a temp dir of ours, removed by Stop
	log        *slog.Logger
	proc       *os.Process
	stderr     *logWriter
	exited     chan struct{} // closed when postgres has exited
	exitErr    error         // valid after exited is closed

	stopOnce sync.Once
	stopErr  error
}

const (
	superuser = "postgres"
	port      = 5432
	// startRetryWindow bounds the retries of a start that found another
	// postmaster's pid file (see startCluster).
	startRetryWindow = 10 * time.Second
	// maxSockPath is the longest unix socket path we use: sun_path holds
	// 108 bytes including the terminating NUL.
	maxSockPath = 107
	sockName    = ".s.PGSQL.5432"
)

// Error is a failure to set up, start or use a cluster. Log holds the last
// lines initdb or postgres printed when they explain it.
type Error struct {
	Op  string // what failed: "start", "initialise", "create database NAME", "stop"
	Dir string // the data directory
	Err error
	Log string
}

func (e *Error) Error() string {
	s := "pglocal: " + e.Op + " " + e.Dir + ": " + e.Err.Error()
	if e.Log != "" {
		s += "; log tail:\n" + e.Log
	}
	return s
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Cause returns the one line that best explains the failure: the last
// FATAL, PANIC or ERROR line postgres logged (or initdb's last "error:"),
// else the last line logged (postgres reports some problems before its
// logging starts, as "postgres: MESSAGE"), else the first line of the
// underlying error.
func (e *Error) Cause() string {
	lines := strings.Split(strings.TrimSpace(e.Log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		for _, sev := range []string{"FATAL:", "PANIC:", "ERROR:", "error:"} {
			if j := strings.Index(lines[i], sev); j >= 0 {
				if msg := strings.TrimSpace(lines[i][j+len(sev):]); msg != "" {
					return msg
				}
			}
		}
	}
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		for _, prog := range []string{"postgres: ", "initdb: "} {
			last = strings.TrimPrefix(last, prog)
		}
		return last
	}
	first, _, _ := strings.Cut(e.Err.Error(), "\n")
	return first
}

// Start runs the cluster in dataDir, creating it with initdb if dataDir holds
// no cluster yet, and returns once the server accepts connections. The server
// listens only on a unix socket; authentication is trust for the superuser
// "postgres", so access control rests on the socket directory's permissions.
//
// When running as root, initdb and postgres run as the "postgres" OS user
// (they refuse to run as root), which then owns dataDir. Errors are *Error.
func Start(ctx context.Context, dataDir string, opts Options) (*Cluster, error) {
	c, err := startCluster(ctx, dataDir, opts)
	if err != nil {
		return nil, startError(dataDir, err)
	}
	return c, nil
}

// startError makes err an *Error about starting the cluster in dir, unless
// it already is one.
func startError(dir string, err error) error {
	var pe *Error
	if errors.As(err, &pe) {
		return err
	}
	return &Error{Op: "start", Dir: dir, Err: err}
}

func startCluster(ctx context.Context, dataDir string, opts Options) (*Cluster, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 200
	}
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	cred, err := runAsFor(dataDir)
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dataDir, cred); err != nil {
		return nil, err
	}
	if err := checkOwner(dataDir); err != nil {
		return nil, err
	}

	c := &Cluster{
		dataDir: dataDir,
		sockDir: dataDir,
		log:     opts.Logger.With("component", "postgres"),
		exited:  make(chan struct{}),
	}
	// Unix socket paths are limited to ~107 bytes, and test temp dirs or
	// deep install paths can exceed that: then put the socket in a short
	// private directory under the temp dir instead of in dataDir.
	if len(dataDir)+1+len(sockName)+len(".lock") > maxSockPath {
		base := os.TempDir()
		if len(base) > 64 { // a long TMPDIR would not help
			base = "/tmp"
		}
		dir, err := os.MkdirTemp(base, "pgsock")
		if err != nil {
			return nil, fmt.Errorf("socket directory: %w", err)
		}
		c.sockDir, c.ownSockDir = dir, true
		if err := prepareDir(dir, cred); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}

	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx, binDir, cred, opts); err != nil {
			c.removeSockDir()
			return nil, err
		}
	} else if err != nil {
		c.removeSockDir()
		return nil, err
	}

	args := []string{
		"-D", dataDir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=",
		"-c", "unix_socket_directories=" + c.sockDir,
		"-c", "unix_socket_permissions=0700",
		"-c", "max_connections=" + strconv.Itoa(opts.MaxConnections),
		"-c", "logging_collector=off",
		"-c", "log_destination=stderr",
	}
	if opts.NoFsync {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	// A crashed process's postmaster dies with it (Pdeathsig), but not at
	// once: a restart right after the crash can find its postmaster.pid
	// naming a live process. Retried for this long.
	pidDeadline := time.Now().Add(startRetryWindow)
	for {
		if err := c.startPostgres(filepath.Join(binDir, "postgres"), args, cred); err != nil {
			c.removeSockDir()
			return nil, err
		}
		err := c.waitReady(ctx)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			// Interrupted while it starts (Ctrl-C): a fast shutdown, not
			// an immediate one, so the next start needs no crash recovery.
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			c.Stop(sctx) //nolint:errcheck // reporting the interruption
			cancel()
			return nil, err
		}
		c.kill()
		// After a crash (postmaster SIGKILLed), its backends may outlive it
		// for a moment, still attached to the old shared memory, and
		// postgres refuses to start until they are gone: retry. Likewise
		// while the old postmaster itself is still exiting.
		tail := c.stderr.tail()
		shm := strings.Contains(tail, "pre-existing shared memory block")
		pid := strings.Contains(tail, `lock file "postmaster.pid" already exists`) && time.Now().Before(pidDeadline)
		if (shm || pid) && ctx.Err() == nil {
			c.log.Info("old postgres processes still running; retrying")
			// A fresh start: kill's result is not this server's.
			c.exited, c.stopOnce, c.stopErr = make(chan struct{}), sync.Once{}, nil
			select {
			case <-time.After(200 * time.Millisecond):
				continue
			case <-ctx.Done():
			}
		}
		c.removeSockDir()
		return nil, err
	}
}

// URL returns a pgx connection URL for database over the cluster's unix
// socket.
func (c *Cluster) URL(database string) string { return socketURL(c.sockDir, database) }

func socketURL(sockDir, database string) string {
	return "postgres://" + superuser + "@/" + url.PathEscape(database) +
		"?host=" + url.QueryEscape(sockDir) + "&port=" + strconv.Itoa(port) + "&sslmode=disable"
}

// DataDir returns the cluster's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// CreateDatabase creates database name unless it exists.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	return createDatabase(ctx, c.URL("postgres"), c.dataDir, name)
}

// createDatabase creates database name over the maintenance database at
// url unless it exists.
func createDatabase(ctx context.Context, url, dataDir, name string) error {
	fail := func(err error) error { return &Error{Op: "create database " + name, Dir: dataDir, Err: err} }
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fail(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fail(err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: lost a race, fine
		return nil
	}
	if err != nil {
		return fail(err)
	}
	return nil
}

// Stop shuts the server down with a fast shutdown (SIGINT: roll back open
// transactions, checkpoint, exit) and waits for it to exit. If ctx ends
// first it falls back to an immediate shutdown (SIGQUIT), and to SIGKILL if
// even that hangs. Calling Stop again returns the first result.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() {
		defer c.removeSockDir()
		if err := c.proc.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
			c.stopErr = &Error{Op: "stop", Dir: c.dataDir, Err: err}
		}
		select {
		case <-c.exited:
			return
		case <-ctx.Done():
		}
		c.log.Warn("postgres did not stop in time; immediate shutdown")
		c.proc.Signal(syscall.SIGQUIT) //nolint:errcheck // it may have just exited
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			c.proc.Kill() //nolint:errcheck
			<-c.exited
		}
		c.stopErr = &Error{Op: "stop", Dir: c.dataDir, Err: ctx.Err()}
	})
	return c.stopErr
}

// kill stops a server that never became ready.
func (c *Cluster) kill() {
	c.stopOnce.Do(func() {
		c.proc.Signal(syscall.SIGQUIT) //nolint:errcheck
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			c.proc.Kill() //nolint:errcheck
			<-c.exited
		}
		c.stopErr = errors.New("pglocal: server failed to start")
	})
}

func (c *Cluster) removeSockDir() {
	if c.ownSockDir {
		os.RemoveAll(c.sockDir)
	}
}

// textCtype is the character classification the cluster is created with.
// Sorting stays byte order (collation C: fast, and no index depends on a
// C library's collation version), but characters are classified as
// Unicode says: pg_trgm, which the text search index uses, takes only
// what the database's LC_CTYPE calls letters and digits as parts of words,
// so under plain C a Cyrillic or Greek word has no trigram and each
// search for one reads every message (ARCHITECTURE.md, "Text search").
const textCtype = "C.UTF-8"

func (c *Cluster) initdb(ctx context.Context, binDir string, cred *syscall.Credential, opts Options) error {
	args := []string{
		"-D", c.dataDir,
		"-U", superuser,
		"--auth-local=trust",
		// No TCP listener is configured; reject there too in case one is
		// ever added by hand.
		"--auth-host=reject",
		"-E", "UTF8",
		"--locale=C",
	}
	if opts.NoFsync {
		args = append(args, "--no-sync")
	}
	c.log.Info("initialising PostgreSQL cluster", "dir", c.dataDir)
	out, err := c.runInitdb(ctx, binDir, cred, append(args, "--lc-ctype="+textCtype))
	if err != nil && bytes.Contains(out, []byte("invalid locale")) {
		// A C library without C.UTF-8 (glibc before 2.35 has it only
		// when generated): initdb checks locales before it writes
		// anything, so the directory is still empty.
		c.log.Warn("PostgreSQL cluster created with LC_CTYPE C: searches for words of non-Latin scripts will scan every message", "missing_locale", textCtype)
		out, err = c.runInitdb(ctx, binDir, cred, args)
	}
	if err != nil {
		return &Error{Op: "initialise", Dir: c.dataDir, Err: fmt.Errorf("initdb: %w", err), Log: tail(out, 20)}
	}
	return nil
}

func (c *Cluster) runInitdb(ctx context.Context, binDir string, cred *syscall.Credential, args []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), args...)
	cmd.Dir = c.dataDir
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	c.log.Debug("initdb output", "output", string(out))
	return out, err
}

// startPostgres starts the postmaster so that it dies with us.
//
// Pdeathsig makes the kernel send SIGQUIT (immediate shutdown) to postgres
// when its parent dies, so a crashed or killed mailstack (or test binary)
// leaves no orphan server holding the data dir. But the "parent" is the OS
// thread that forked, not the process: if the Go runtime retired that thread
// the signal would fire while we still run. So fork from a goroutine locked
// to its thread, and keep that goroutine blocked in Wait until postgres has
// exited; a locked thread is never reused or retired while its goroutine
// lives.
func (c *Cluster) startPostgres(path string, args []string, cred *syscall.Credential) error {
	c.stderr = newLogWriter(c.log)
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread exits with the goroutine, after
		// postgres has exited.
		cmd := exec.Command(path, args...)
		cmd.Dir = c.dataDir
		cmd.Env = childEnv()
		cmd.Stdout = c.stderr
		cmd.Stderr = c.stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: cred,
			Pdeathsig:  syscall.SIGQUIT,
			// Own process group: a terminal's Ctrl-C goes to us, and we
			// decide how postgres shuts down.
			Setpgid: true,
		}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start postgres: %w", err)
			close(c.exited)
			return
		}
		c.proc = cmd.Process
		started <- nil
		c.exitErr = cmd.Wait()
		c.stderr.flush()
		close(c.exited)
	}()
	return <-started
}

// waitReady polls until the server accepts connections, it exits, or ctx
// ends.
func (c *Cluster) waitReady(ctx context.Context) error {
	var lastErr error
	for {
		select {
		case <-c.exited:
			return &Error{Op: "start", Dir: c.dataDir, Err: fmt.Errorf("postgres exited during startup (%v)", c.exitErr), Log: c.stderr.tail()}
		case <-ctx.Done():
			return &Error{Op: "start", Dir: c.dataDir, Err: fmt.Errorf("waiting for postgres to accept connections: %w (last error: %v)", ctx.Err(), lastErr), Log: c.stderr.tail()}
		default:
		}
		// The socket may belong to another server already running on this
		// data dir (ours will then exit): only trust a connection once
		// postmaster.pid names our process.
		if lastErr = c.ownsPidFile(); lastErr == nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			conn, err := pgx.Connect(cctx, c.URL("postgres"))
			cancel()
			if err == nil {
				conn.Close(ctx)
				return nil
			}
			lastErr = err
		}
		select {
		case <-c.exited:
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ownsPidFile reports whether postmaster.pid names our postgres process.
func (c *Cluster) ownsPidFile() error {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if pid, _ := strconv.Atoi(strings.TrimSpace(first)); pid != c.proc.Pid {
		return fmt.Errorf("postmaster.pid names process %s, not ours (%d)", first, c.proc.Pid)
	}
	return nil
}

// findBinDir returns the directory with initdb and postgres.
func findBinDir(dir string) (string, error) {
	has := func(d string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(d, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("initdb and postgres not found in %s", dir)
		}
		return dir, nil
	}
	for _, pattern := range []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"} {
		dirs, _ := filepath.Glob(pattern)
		// Newest major version first: compare numerically ("9.6" < "15").
		sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
		for _, d := range dirs {
			if has(d) {
				return d, nil
			}
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin or PATH; install PostgreSQL (e.g. apt-get install postgresql) or configure a database URL")
}

// versionOf extracts the major version from a .../postgresql/15/bin or
// .../pgsql-15/bin path.
func versionOf(binDir string) float64 {
	v := filepath.Base(filepath.Dir(binDir))
	v = strings.TrimPrefix(v, "pgsql-")
	f, _ := strconv.ParseFloat(v, 64)
	return f
}

// OwnerError is returned when the cluster belongs to another OS user than
// the one this process runs as (and that is not root): PostgreSQL only
// runs as its data directory's owner. It says who owns it.
type OwnerError struct {
	Dir   string
	Owner string // user name, or uid when it has none
}

func (e *OwnerError) Error() string {
	return fmt.Sprintf("%s belongs to user %s, not to the user running this command", e.Dir, e.Owner)
}

// DirOwner returns the owner and group of the existing file or directory
// path; ok is false if it cannot be read.
func DirOwner(path string) (uid, gid uint32, ok bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}

// checkOwner refuses a cluster owned by another user, unless we are root
// (which runs it as its owner, see runAsFor): postgres would fail on it
// with "permission denied", saying nothing of why.
func checkOwner(dataDir string) error {
	if os.Geteuid() == 0 {
		return nil
	}
	if owner, _, ok := DirOwner(dataDir); ok && int(owner) != os.Geteuid() {
		return &OwnerError{Dir: dataDir, Owner: UserName(owner)}
	}
	return nil
}

// UserName returns the name of the OS user uid, or the number when it has
// none.
func UserName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return id
}

// runAsFor returns the credentials to run initdb and postgres with for the
// cluster in dataDir: nil (our own) unless we are root, which PostgreSQL
// refuses. Then an existing cluster runs as its owner, whose it stays
// (mailstack serve under systemd runs it as the service user; a root
// command must not take it away), and a new one as the "postgres" user.
func runAsFor(dataDir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err == nil {
		if uid, gid, ok := DirOwner(dataDir); ok && uid != 0 {
			return &syscall.Credential{Uid: uid, Gid: gid}, nil
		}
	}
	return RunAs()
}

// RunAs returns the credentials to run initdb and postgres with: nil (our
// own) unless we are root, which PostgreSQL refuses, in which case the
// "postgres" OS user's. (PgBouncer refuses root too: storetest runs it so.)
func RunAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root, but there is no \"postgres\" OS user to run it as (%w); install PostgreSQL (which creates it) or create the user (useradd --system postgres)", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres user: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres user: %w", err)
	}
	// Go also drops root's supplementary groups (setgroups with none).
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// prepareDir creates dir (mode 0700) and, when postgres runs as another
// user, hands it over (unless it is theirs already) and makes its
// ancestors traversable by that user.
func prepareDir(dir string, cred *syscall.Credential) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if cred == nil {
		return nil
	}
	if owner, _, ok := DirOwner(dir); !ok || owner != cred.Uid {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	// postgres must be able to reach dir: temp dirs (os.MkdirTemp,
	// t.TempDir) are 0700 root. Grant only search (x) to others, and only
	// where the postgres user has no search permission yet.
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if !canSearch(fi, cred) {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("make %s traversable for postgres: %w", d, err)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func canSearch(fi os.FileInfo, cred *syscall.Credential) bool {
	m := fi.Mode().Perm()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return m&0o001 != 0
	}
	switch {
	case st.Uid == cred.Uid:
		return m&0o100 != 0
	case st.Gid == cred.Gid:
		return m&0o010 != 0
	default:
		return m&0o001 != 0
	}
}

// childEnv is our environment minus PG* variables (which would redirect
// initdb and postgres), with C messages so logs are predictable.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// logWriter turns postgres' output into log records and keeps the last
// lines for error messages.
type logWriter struct {
	log   *slog.Logger
	mu    sync.Mutex
	buf   []byte   // incomplete last line
	lines []string // ring of recent lines
}

const tailLines = 30

func newLogWriter(log *slog.Logger) *logWriter { return &logWriter{log: log} }

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *logWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.line(string(w.buf))
		w.buf = nil
	}
}

func (w *logWriter) line(s string) {
	w.log.Log(context.Background(), lineLevel(s), s)
	w.lines = append(w.lines, s)
	if len(w.lines) > tailLines {
		w.lines = w.lines[len(w.lines)-tailLines:]
	}
}

// routineFatal are FATAL lines that are no failure: our own readiness
// probes while the server starts, and connections ended by a shutdown.
var routineFatal = []string{
	"the database system is starting up",
	"the database system is shutting down",
	"terminating connection due to administrator command",
}

// lineLevel is the log level of one line of postgres' output: WARNING,
// ERROR, FATAL and PANIC are info (what they break is reported by the
// caller, in one sentence), except the routine FATAL lines of every start
// and stop, which are debug; everything else is debug.
func lineLevel(s string) slog.Level {
	for _, sev := range []string{"WARNING:", "ERROR:", "FATAL:", "PANIC:"} {
		if !strings.Contains(s, sev) {
			continue
		}
		for _, r := range routineFatal {
			if strings.Contains(s, r) {
				return slog.LevelDebug
			}
		}
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

func (w *logWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// tail returns the last n lines of out.
func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
