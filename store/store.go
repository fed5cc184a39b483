// Package store is mailstack's PostgreSQL message store: accounts,
// credentials, mailboxes, messages and their bodies, the outbound queue and
// the change feed. It is the only package that speaks SQL; callers get Go
// types. Every query that touches account data is scoped by account id in SQL
// (ARCHITECTURE.md invariant 4).
package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailstack/mailstack/migrations"
)

// Errors returned by store calls. Callers match them with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrAuthFailed  = errors.New("authentication failed")
	ErrThrottled   = errors.New("too many failed login attempts; try again later")
	ErrInvalid     = errors.New("invalid argument")
	ErrNoSelect    = errors.New("mailbox cannot be selected")
	ErrHasChildren = errors.New("has children") // a mailbox with mailboxes below it, a domain with accounts
	ErrOverQuota   = errors.New("quota exceeded")
	ErrAccountGone = errors.New("account disabled or removed")
)

// ObjectError is an error about one named object: an account, a domain, an
// alias, an app password. errors.Is matches its sentinel (ErrNotFound,
// ErrExists, ErrHasChildren), and callers that report errors to people
// (the CLI) can name the object without parsing the message.
type ObjectError struct {
	Kind string // "account", "domain", "alias", "app password"
	Name string // as the caller gave it
	Err  error  // one of the sentinel errors above
}

func (e *ObjectError) Error() string { return e.Kind + " " + e.Name + ": " + e.Err.Error() }

// Unwrap returns the sentinel error.
func (e *ObjectError) Unwrap() error { return e.Err }

func objectErr(kind, name string, err error) error {
	return &ObjectError{Kind: kind, Name: name, Err: err}
}

// Store is a handle on the database. It is safe for concurrent use.
type Store struct {
	pool  *pgxpool.Pool
	opts  Options
	log   *slog.Logger
	argon chan struct{} // bounds concurrent argon2id checks
	// ctype is the database's LC_CTYPE class for the text index, read on
	// first use: 0 unknown, ctypeC or ctypeOther.
	ctype atomic.Int32
	// listener is the process's LISTEN connection (listen.go).
	listener listener
}

// Options tune a Store. The zero value is usable.
type Options struct {
	// MaxConns caps the connection pool (default: the URL's
	// pool_max_conns, else DefaultMaxConns).
	MaxConns int32
	// AllowMainPassword lets IMAP and SMTP accept the main password of an
	// account whose require_app_passwords flag is off. When false (the
	// default, MAILSTACK_REQUIRE_APP_PASSWORDS=true) only app passwords
	// work on the wire, as with iCloud.
	AllowMainPassword bool
	// LearnJunk makes MOVE and COPY into and out of the \Junk mailbox
	// queue the messages for rspamd's learning (ClaimLearn); set
	// it when a junk learner runs, else the queue would only grow.
	LearnJunk bool
	// Logger receives the store's own logs (default slog.Default()).
	Logger *slog.Logger
	// OnLogin, if set, is called after every recorded login attempt (for
	// metrics).
	OnLogin func(protocol string, success bool)
	// Throttle configures login throttling; zero means defaults.
	Throttle ThrottlePolicy
	// Listen configures the change feed's LISTEN connection.
	Listen ListenOptions
	// Tracer, if set, is installed on every connection of the pool (and
	// on the LISTEN connection, which copies the pool's configuration):
	// for tests and benchmarks, e.g. to count database round trips. It
	// may also implement the other pgx tracer interfaces (pgx.BatchTracer,
	// pgx.PrepareTracer, pgx.CopyFromTracer, pgx.ConnectTracer).
	Tracer pgx.QueryTracer
}

// DefaultMaxConns is the pool's size unless set: pgxpool's own default
// (the number of CPUs, at least 4) makes a short query wait behind long
// ones on a small machine, each session's command holding a connection
// for one statement. The URL's pool_max_conns sets another.
const DefaultMaxConns = 20

// Open connects to the database at url. It does not migrate; call Migrate.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	switch {
	case opts.MaxConns > 0:
		cfg.MaxConns = opts.MaxConns
	case !strings.Contains(url, "pool_max_conns"):
		cfg.MaxConns = DefaultMaxConns
	}
	if opts.Tracer != nil {
		cfg.ConnConfig.Tracer = opts.Tracer
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	opts.Throttle = opts.Throttle.withDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Store{pool: pool, opts: opts, log: log, argon: make(chan struct{}, runtime.GOMAXPROCS(0))}, nil
}

// Close releases the connection pool.
func (s *Store) Close() { s.pool.Close() }

// ConnConfig returns the connection configuration of the pool, for callers
// (the change feed) that need a dedicated connection of their own.
func (s *Store) ConnConfig() *pgx.ConnConfig { return s.pool.Config().ConnConfig.Copy() }

// migrateLockID is the pg_advisory_lock key serialising schema changes
// across processes ("mailstack" in ASCII, truncated).
const migrateLockID = 0x6d61696c737461

// Migrate applies every migration not yet applied, in order, under an
// advisory lock, so that several processes starting at once all succeed.
// With ListenOptions.URL set it migrates over that direct connection: the
// lock is a session's, which a transaction-pooling proxy in front of the
// pool would not keep (nor release) on one server connection.
func (s *Store) Migrate(ctx context.Context) error {
	u := s.opts.Listen.URL
	if u == "" {
		return Migrate(ctx, s.pool)
	}
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		return fmt.Errorf("migrate: parse listen URL: %w", err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer pool.Close()
	return Migrate(ctx, pool)
}

// Migrate applies pending migrations on the database behind pool.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	files, err := migrationFiles()
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrateLockID)); err != nil {
		return fmt.Errorf("migrate: take lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(migrateLockID)) //nolint:errcheck
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, f := range files {
		var done bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", f.version).Scan(&done); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if done {
			continue
		}
		body, err := fs.ReadFile(migrations.FS, f.name)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", f.version)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: apply %s: %w", f.name, err)
		}
	}
	return backfillSortKeys(ctx, conn)
}

type migrationFile struct {
	version int
	name    string
}

func migrationFiles() ([]migrationFile, error) {
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var files []migrationFile
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		if !ok || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migrate: bad migration file name %q", e.Name())
		}
		files = append(files, migrationFile{v, e.Name()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].version < files[j].version })
	return files, nil
}
