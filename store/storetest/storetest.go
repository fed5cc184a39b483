// Package storetest gives tests a fresh, migrated mailstack database each.
//
// A package's tests opt in with
//
//	func TestMain(m *testing.M) { storetest.Main(m) }
//
// Main runs one private PostgreSQL cluster (store/pglocal) for the test
// binary, or uses the server at MAILSTACK_TEST_DATABASE_URL when set, and
// migrates a template database once; New and NewURL then clone the template
// per test, which takes milliseconds, and drop the clone when the test ends.
// Without a usable PostgreSQL, Main fails loudly: tests never skip.
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailstack/mailstack/migrations"
	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/pglocal"
)

// EnvDatabaseURL names the environment variable pointing the tests at an
// existing PostgreSQL server instead of a private cluster. Its user must be
// allowed to create databases; the database in the URL is used only to run
// CREATE/DROP DATABASE.
const EnvDatabaseURL = "MAILSTACK_TEST_DATABASE_URL"

// localTemplate is the template database name in a private cluster.
const localTemplate = "mailstack_template"

// storeMaxConns caps each test store's pool so that many parallel tests stay
// within the server's max_connections.
const storeMaxConns = 8

// harness is the state shared by Main and New.
type harness struct {
	admin    *pgxpool.Pool // on a maintenance database, for CREATE/DROP DATABASE
	baseURL  string        // URL whose database part is replaced per test
	template string

	// cloneMu serialises this binary's CREATE DATABASE ... TEMPLATE calls
	// (tests run in parallel): cloning fails if any other session is on the
	// template, and one clone at a time keeps the server's copy work from
	// contending.
	cloneMu sync.Mutex
}

// current is set once by Main before any test runs and only read after.
// Package-level state is otherwise avoided in mailstack; a TestMain hook
// cannot hand state to tests any other way, so this is the one accepted
// exception.
var current *harness

// Main runs the tests of a package with a private PostgreSQL cluster (or the
// server at MAILSTACK_TEST_DATABASE_URL), then removes it, and exits with
// the tests' status. Use it in TestMain:
//
//	func TestMain(m *testing.M) { storetest.Main(m) }
//
// If no PostgreSQL can be started or reached it prints why and exits non-zero.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	h, cleanup, err := setup(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\n"+
			"************************************************************\n"+
			"storetest: cannot provide a PostgreSQL database for tests:\n%v\n\n"+
			"Install PostgreSQL server binaries (e.g. apt-get install postgresql)\n"+
			"or set %s to a server where the user may create databases.\n"+
			"************************************************************\n\n",
			err, EnvDatabaseURL)
		return 1
	}
	// Cleanup runs on normal exit and test failure. A panic or -timeout
	// exits the process from inside m.Run: postgres then dies with us
	// (pglocal's parent-death signal), leaving only the temp dir.
	defer cleanup()
	current = h
	return m.Run()
}

// setup prepares the server and the template database.
func setup(ctx context.Context) (*harness, func(), error) {
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		return setupExternal(ctx, u)
	}
	return setupLocal(ctx)
}

func setupLocal(ctx context.Context) (h *harness, cleanup func(), err error) {
	base := clusterBase()
	sweepStale(base)
	dir, err := os.MkdirTemp(base, dirPrefix)
	if err != nil {
		return nil, nil, err
	}
	var cluster *pglocal.Cluster
	cleanup = func() {
		if h != nil && h.admin != nil {
			h.admin.Close()
		}
		if cluster != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := cluster.Stop(ctx); err != nil {
				fmt.Fprintf(os.Stderr, "storetest: %v\n", err)
			}
			cancel()
		}
		os.RemoveAll(dir)
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()

	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("MAILSTACK_TEST_PGLOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cluster, err = pglocal.Start(ctx, filepath.Join(dir, "data"), pglocal.Options{
		NoFsync:        true,
		MaxConnections: 300,
		Logger:         logger,
	})
	if err != nil {
		return nil, nil, err
	}
	h = &harness{baseURL: cluster.URL("postgres"), template: localTemplate}
	if h.admin, err = pgxpool.New(ctx, h.baseURL); err != nil {
		return nil, nil, fmt.Errorf("connect to test cluster: %w", err)
	}
	if err := cluster.CreateDatabase(ctx, localTemplate); err != nil {
		return nil, nil, err
	}
	if err := migrateTemplate(ctx, h.admin, h.urlFor(localTemplate), localTemplate); err != nil {
		return nil, nil, err
	}
	return h, cleanup, nil
}

const dirPrefix = "mailstack-test-"

// clusterBase picks where test clusters live: /dev/shm when it is a roomy
// tmpfs, else the temp dir. On disk filesystems (ext4 at least) CREATE
// DATABASE spends ~300 ms creating files; on tmpfs ~30 ms, and every test
// clones a database.
func clusterBase() string {
	const tmpfsMagic = 0x01021994
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err == nil && st.Type == tmpfsMagic &&
		st.Bavail*uint64(st.Bsize) >= 1<<30 && syscall.Access("/dev/shm", 0o2|0o1) == nil {
		return "/dev/shm"
	}
	return os.TempDir()
}

// sweepStale removes clusters left by test binaries that died without
// cleanup (a panic, -timeout, SIGKILL): their postgres has exited (parent-
// death signal) but the directory remains, in RAM if on /dev/shm. Only
// directories untouched for a while are candidates, so a binary still
// initialising its cluster is left alone, and a live postmaster is too.
func sweepStale(base string) {
	dirs, _ := filepath.Glob(filepath.Join(base, dirPrefix+"*"))
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < 10*time.Minute {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			pid, err := strconv.Atoi(strings.TrimSpace(first))
			if err != nil || pid <= 0 || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
				continue
			}
		}
		os.RemoveAll(dir)
	}
}

// setupExternal uses an existing server. Several test binaries (go test
// ./...) share it concurrently, and branches with different schemas may too,
// so the template is named after a hash of the migrations and built under an
// advisory lock; once built it is never connected to again, so clones never
// collide with a session on it.
func setupExternal(ctx context.Context, baseURL string) (*harness, func(), error) {
	sum, err := migrationsHash()
	if err != nil {
		return nil, nil, err
	}
	h := &harness{baseURL: baseURL, template: "mailstack_tmpl_" + sum[:16]}
	if h.admin, err = pgxpool.New(ctx, baseURL); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", EnvDatabaseURL, err)
	}
	if err := h.admin.Ping(ctx); err != nil {
		h.admin.Close()
		return nil, nil, fmt.Errorf("%s: %w", EnvDatabaseURL, err)
	}
	if err := h.buildExternalTemplate(ctx, sum); err != nil {
		h.admin.Close()
		return nil, nil, err
	}
	return h, h.admin.Close, nil
}

func (h *harness) buildExternalTemplate(ctx context.Context, sum string) error {
	conn, err := h.admin.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", EnvDatabaseURL, err)
	}
	defer conn.Release()
	// Session lock: held on this connection until unlocked.
	lockID := int64(binary.BigEndian.Uint64([]byte("mstmpl\x00\x00")))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockID); err != nil {
		return fmt.Errorf("lock test template: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockID) //nolint:errcheck

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", h.template).Scan(&exists); err != nil {
		return fmt.Errorf("look up test template: %w", err)
	}
	if exists {
		return nil
	}
	// Build under a scratch name and rename when complete, so a binary
	// killed mid-migration never leaves a half-built template behind.
	build := h.template + "_build"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(build)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop stale template build: %w", err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident(build)); err != nil {
		return fmt.Errorf("create test template: %w", err)
	}
	if err := migrateTemplate(ctx, h.admin, h.urlFor(build), build); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(build)+" RENAME TO "+ident(h.template)); err != nil {
		return fmt.Errorf("rename test template: %w", err)
	}
	return nil
}

// migrateTemplate migrates database name, then closes every connection to
// it and forbids new ones: CREATE DATABASE ... TEMPLATE fails while any
// session is connected to the template.
func migrateTemplate(ctx context.Context, admin *pgxpool.Pool, dbURL, name string) error {
	s, err := store.Open(ctx, dbURL, store.Options{MaxConns: 1})
	if err != nil {
		return fmt.Errorf("open test template: %w", err)
	}
	err = s.Migrate(ctx)
	s.Close()
	if err != nil {
		return fmt.Errorf("migrate test template: %w", err)
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("seal test template: %w", err)
	}
	return nil
}

// migrationsHash identifies the embedded schema.
func migrationsHash() (string, error) {
	hash := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(hash, "%s\x00%d\x00", path, len(body))
		hash.Write(body)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return hex.EncodeToString(hash.Sum(nil)), nil
}

// urlFor returns baseURL pointing at database name instead.
func (h *harness) urlFor(name string) string {
	if strings.HasPrefix(h.baseURL, "postgres://") || strings.HasPrefix(h.baseURL, "postgresql://") {
		u, err := url.Parse(h.baseURL)
		if err == nil {
			u.Path, u.RawPath = "/"+name, ""
			return u.String()
		}
	}
	// keyword=value form: a later keyword overrides an earlier one.
	return h.baseURL + " dbname=" + name
}

// NewURL returns the URL of a fresh migrated database, dropped when the test
// ends. Use it for tests that open several pools on one database (two
// servers sharing a database); otherwise New is simpler.
func NewURL(t testing.TB) string {
	t.Helper()
	h := harnessFor(t)
	return newDatabase(t, h, "TEMPLATE "+ident(h.template))
}

// NewURLCtype is NewURL for a database whose LC_CTYPE (character classes)
// is ctype, such as "C", which the server's own default may not be. It is
// migrated from empty: a clone must keep its template's LC_CTYPE.
func NewURLCtype(t testing.TB, ctype string) string {
	t.Helper()
	u := newDatabase(t, harnessFor(t), "TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE "+quote(ctype))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := store.Open(ctx, u, store.Options{MaxConns: 1})
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("storetest: migrate: %v", err)
	}
	return u
}

// harnessFor returns the harness Main set up, failing t without one.
func harnessFor(t testing.TB) *harness {
	t.Helper()
	if current == nil {
		t.Fatal("storetest: no test database server: add\n\tfunc TestMain(m *testing.M) { storetest.Main(m) }\nto this package's tests")
	}
	return current
}

// quote returns s as an SQL string literal.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// newDatabase creates a database with the given CREATE DATABASE options
// that is dropped when the test ends, and returns its URL.
func newDatabase(t testing.TB, h *harness, options string) string {
	t.Helper()
	name, err := randomName()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.cloneMu.Lock()
	_, err = h.admin.Exec(ctx, "CREATE DATABASE "+ident(name)+" "+options)
	h.cloneMu.Unlock()
	if err != nil {
		t.Fatalf("storetest: create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h.admin.Exec(ctx, "DROP DATABASE "+ident(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("storetest: drop test database %s: %v", name, err)
		}
	})
	return h.urlFor(name)
}

// New returns a Store on a fresh, migrated database that is closed and
// dropped when the test ends.
func New(t testing.TB) *store.Store {
	t.Helper()
	u := NewURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, u, store.Options{MaxConns: storeMaxConns})
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	// Registered after NewURL's drop, so it runs before it.
	t.Cleanup(s.Close)
	return s
}

// randomName returns a unique database name; random rather than a counter
// because test binaries may share an external server.
func randomName() (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("storetest: %w", err)
	}
	return "mailstack_test_" + hex.EncodeToString(b[:]), nil
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// Open returns a Store on url (from NewURL), with default options, closed
// when the test ends: another process's view of the same database.
func Open(t testing.TB, url string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
