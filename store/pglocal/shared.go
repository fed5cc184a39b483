package pglocal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Role says how a process uses a cluster that several processes on one
// machine may want at the same time (mailstack serve and admin commands).
//
// The postgres server dies with the process that started it (see
// startPostgres), so a process may only lend its server to others if it
// outlives them: that is the Owner, and only the Owner lends. A Guest never
// lends its own server, so the end of a guest never pulls a server from
// under anyone.
type Role int

const (
	// Guest uses the running Owner's server if there is one; otherwise it
	// runs a private server for as long as it needs it, and anyone else
	// (guest or owner) waits until it is done. For short-lived commands.
	Guest Role = iota
	// Owner runs the server for as long as it lives and lets guests use
	// it. There is at most one owner per data directory; an owner waits
	// for a guest's private server to stop before starting its own, and
	// its Close waits for the guests using its server (Options.GuestWait).
	Owner
)

func (r Role) String() string {
	if r == Owner {
		return "owner"
	}
	return "guest"
}

// ErrOwned is returned when an Owner asks for a cluster that another owner
// already runs.
var ErrOwned = errors.New("another process already runs this cluster as its owner")

// ErrBusy is returned when another process's private server held the
// cluster for longer than Options.Wait.
var ErrBusy = errors.New("another process kept the cluster busy for too long")

// Shared is a cluster in use by this process: one it runs, or the owner's.
type Shared struct {
	role    Role
	dataDir string
	cluster *Cluster // nil when using the owner's server
	sockDir string
	// runLock is held (flock, exclusive) by whoever runs the server, for
	// as long as it runs; its file says who that is (lockInfo).
	runLock *os.File
	// ownerLock is held by the owner, also while it waits for runLock.
	ownerLock *os.File
	// guestLock is held (flock) by a guest using the owner's server,
	// shared, for as long as it uses it; and by the owner's Close,
	// exclusive, from when no guest uses the server any more until it
	// has stopped.
	guestLock *os.File
	guestWait time.Duration
	log       *slog.Logger
}

// lockInfo is what the runLock file says about the server's runner.
type lockInfo struct {
	Role    string `json:"role"`
	PID     int    `json:"pid"`
	SockDir string `json:"socket_dir,omitempty"` // set once the server accepts connections
}

// Use gives this process a cluster in dataDir according to role: it starts
// the server (see Start) or, for a Guest, attaches to the running owner's.
// Coordination uses lock files next to dataDir (dataDir.lock,
// dataDir.owner.lock and dataDir.guests.lock), so it covers processes on
// this machine. Close releases the cluster. Errors are *Error.
func Use(ctx context.Context, dataDir string, role Role, opts Options) (*Shared, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, startError(dataDir, err)
	}
	sh, err := use(ctx, dir, role, opts)
	if err != nil {
		return nil, startError(dir, err)
	}
	return sh, nil
}

func use(ctx context.Context, dir string, role Role, opts Options) (_ *Shared, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Wait <= 0 {
		opts.Wait = 2 * time.Minute
	}
	if opts.GuestWait <= 0 {
		opts.GuestWait = 30 * time.Second
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, err
	}
	sh := &Shared{role: role, dataDir: dir, guestWait: opts.GuestWait, log: opts.Logger}
	if role == Owner {
		sh.repairLocks()
	}
	defer func() {
		if err != nil {
			sh.unlock()
		}
	}()
	if role == Owner {
		if sh.ownerLock, err = openLock(dir + ".owner.lock"); err != nil {
			return nil, err
		}
		if locked, err := tryLock(sh.ownerLock); err != nil {
			return nil, err
		} else if !locked {
			return nil, ErrOwned
		}
	}
	runLock, err := openLock(dir + ".lock")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(opts.Wait)
	logged := false
	for {
		locked, err := tryLock(runLock)
		if err != nil {
			runLock.Close()
			return nil, err
		}
		if locked {
			sh.runLock = runLock
			if err := sh.run(ctx, opts); err != nil {
				return nil, err
			}
			return sh, nil
		}
		info, _ := readLockInfo(runLock.Name())
		if role == Guest && info.Role == Owner.String() && info.SockDir != "" {
			if attached := sh.attach(ctx, runLock.Name(), info); attached {
				runLock.Close()
				return sh, nil
			}
		}
		if !logged {
			opts.Logger.Warn("another process is using the managed PostgreSQL; waiting for it to finish",
				"dir", dir, "pid", info.PID, "its_role", info.Role)
			logged = true
		}
		if time.Now().After(deadline) {
			runLock.Close()
			return nil, fmt.Errorf("%w (process %d, over %v)", ErrBusy, info.PID, opts.Wait)
		}
		select {
		case <-ctx.Done():
			runLock.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// run starts the server; the caller holds runLock.
func (sh *Shared) run(ctx context.Context, opts Options) error {
	// Say who runs it before starting, so a guest never mistakes this
	// server for an owner's while it comes up.
	info := lockInfo{Role: sh.role.String(), PID: os.Getpid()}
	if err := writeLockInfo(sh.runLock, info); err != nil {
		return err
	}
	c, err := Start(ctx, sh.dataDir, opts)
	if err != nil {
		return err
	}
	sh.cluster, sh.sockDir = c, c.sockDir
	info.SockDir = c.sockDir
	if err := writeLockInfo(sh.runLock, info); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c.Stop(sctx) //nolint:errcheck // reporting the first error
		return err
	}
	return nil
}

// attach connects to the owner's server described by info and reports
// whether that worked and the owner is still the one that info names; if
// so, this guest holds the guests' lock until Close.
func (sh *Shared) attach(ctx context.Context, lockFile string, info lockInfo) bool {
	// Taken before the checks below: the owner's Close first withdraws
	// the offer (rewrites the lock file without the socket), then takes
	// this lock exclusively. So either the checks see the withdrawal, or
	// the owner waits for this guest.
	gl, err := openLock(sh.dataDir + ".guests.lock")
	if err != nil {
		return false
	}
	ok := false
	defer func() {
		if !ok {
			gl.Close()
		}
	}()
	if locked, err := flockNB(gl, syscall.LOCK_SH); err != nil || !locked {
		return false // the owner is stopping its server
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, socketURL(info.SockDir, "postgres"))
	if err != nil {
		return false
	}
	conn.Close(cctx)
	// The file is rewritten before any other server starts: if it still
	// names this owner, the connection reached the owner's server.
	if now, err := readLockInfo(lockFile); err != nil || now != info {
		return false
	}
	sh.sockDir, sh.guestLock, ok = info.SockDir, gl, true
	return true
}

// URL returns a connection URL for database on the server in use.
func (sh *Shared) URL(database string) string { return socketURL(sh.sockDir, database) }

// Started reports whether this process runs the server (rather than using
// the owner's).
func (sh *Shared) Started() bool { return sh.cluster != nil }

// CreateDatabase creates database name unless it exists.
func (sh *Shared) CreateDatabase(ctx context.Context, name string) error {
	return createDatabase(ctx, sh.URL("postgres"), sh.dataDir, name)
}

// Close stops the server if this process runs it, and releases the locks.
// Connections to the server must be closed first. An owner first waits up
// to Options.GuestWait (not bounded by ctx, which bounds the stop) for the
// guests using its server to finish, then stops it anyway.
func (sh *Shared) Close(ctx context.Context) error {
	var err error
	if sh.cluster != nil {
		if sh.role == Owner {
			sh.waitGuests()
		}
		err = sh.cluster.Stop(ctx)
		// Tell waiting guests nobody runs a server before they can lock.
		writeLockInfo(sh.runLock, lockInfo{}) //nolint:errcheck // the lock is what counts
	}
	sh.unlock()
	return err
}

// waitGuests withdraws the owner's offer of its server and waits, up to
// guestWait, until no guest uses it: attached guests hold the guests' lock
// shared, so the exclusive lock is the sign that they are all gone.
func (sh *Shared) waitGuests() {
	// No socket in the lock file: new guests wait instead of attaching.
	if err := writeLockInfo(sh.runLock, lockInfo{Role: sh.role.String(), PID: os.Getpid()}); err != nil {
		sh.log.Warn("withdraw the managed PostgreSQL from guests", "dir", sh.dataDir, "err", err)
	}
	f, err := openLock(sh.dataDir + ".guests.lock")
	if err != nil {
		sh.log.Warn("stopping the managed PostgreSQL without waiting for guests", "dir", sh.dataDir, "err", err)
		return
	}
	sh.guestLock = f // held until unlock: after the server stopped
	deadline := time.Now().Add(sh.guestWait)
	logged := false
	for {
		locked, err := flockNB(f, syscall.LOCK_EX)
		switch {
		case locked:
			return
		case err != nil:
			sh.log.Warn("stopping the managed PostgreSQL without waiting for guests", "dir", sh.dataDir, "err", err)
			return
		case time.Now().After(deadline):
			sh.log.Warn("other processes (admin commands) still use the managed PostgreSQL; stopping it anyway",
				"dir", sh.dataDir, "waited", sh.guestWait)
			return
		case !logged:
			sh.log.Info("waiting for other processes (admin commands) using the managed PostgreSQL to finish",
				"dir", sh.dataDir, "at_most", sh.guestWait)
			logged = true
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (sh *Shared) unlock() {
	if sh.guestLock != nil {
		sh.guestLock.Close()
		sh.guestLock = nil
	}
	if sh.runLock != nil {
		sh.runLock.Close() // releases the flock
		sh.runLock = nil
	}
	if sh.ownerLock != nil {
		sh.ownerLock.Close()
		sh.ownerLock = nil
	}
}

// lockSuffixes name the lock files beside a data directory.
var lockSuffixes = []string{".lock", ".owner.lock", ".guests.lock"}

// repairLocks replaces lock files this process cannot open, such as those
// a root command once left (mode 0600, owned by root) in the service
// user's directory: every process would wait on them, or fail. The owner
// may remove them because the directory is its own.
func (sh *Shared) repairLocks() {
	for _, suffix := range lockSuffixes {
		path := sh.dataDir + suffix
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err == nil {
			f.Close()
			continue
		}
		if !errors.Is(err, os.ErrPermission) {
			continue
		}
		if err := os.Remove(path); err != nil {
			sh.log.Warn("a lock file of the managed PostgreSQL is not ours and cannot be replaced", "file", path, "err", err)
			continue
		}
		sh.log.Warn("replaced a lock file of the managed PostgreSQL that another user had left", "file", path)
	}
}

// openLock opens (creating) a lock file. Root creates it for the owner of
// its directory (the service user), whose processes must open it too.
func openLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if os.Geteuid() == 0 {
		if uid, gid, ok := DirOwner(filepath.Dir(path)); ok && uid != 0 {
			f.Chown(int(uid), int(gid)) //nolint:errcheck // best effort; the owner repairs it otherwise
		}
	}
	return f, nil
}

// tryLock takes an exclusive flock on f without waiting. flock locks belong
// to the open file, so two opens in one process exclude each other too, and
// the kernel releases them when the process dies.
func tryLock(f *os.File) (bool, error) { return flockNB(f, syscall.LOCK_EX) }

// flockNB takes a flock of kind how (LOCK_EX or LOCK_SH) on f without
// waiting.
func flockNB(f *os.File, how int) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		}
		return false, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
}

func writeLockInfo(f *os.File, info lockInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if _, err := f.WriteAt(append(b, '\n'), 0); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}

func readLockInfo(path string) (lockInfo, error) {
	var info lockInfo
	b, err := os.ReadFile(path)
	if err != nil {
		return info, err
	}
	err = json.Unmarshal(b, &info)
	return info, err
}
