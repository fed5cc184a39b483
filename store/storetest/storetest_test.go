package storetest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
)

func TestMain(m *testing.M) { Main(m) }

const insertDomain = "INSERT INTO domains (name, dkim_selector, dkim_key) VALUES ($1, 'sel', '\\x00')"

// connect opens a plain connection on the database behind s.
func connect(t *testing.T, s *store.Store) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(context.Background(), s.ConnConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestNewIsolated(t *testing.T) {
	ctx := context.Background()
	var dbs [2]string
	ready := make(chan struct{})
	t.Run("group", func(t *testing.T) {
		for i := range 2 {
			t.Run("", func(t *testing.T) {
				t.Parallel()
				s := New(t)
				conn := connect(t, s)
				if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&dbs[i]); err != nil {
					t.Fatal(err)
				}
				// Migrated: the schema is there and empty.
				var n int
				if err := conn.QueryRow(ctx, "SELECT count(*) FROM mailboxes").Scan(&n); err != nil {
					t.Fatalf("mailboxes table: %v", err)
				}
				if n != 0 {
					t.Errorf("%d mailboxes in a fresh database", n)
				}
				if i == 0 {
					// Released even if this test fails, so the other one
					// never hangs.
					defer close(ready)
					if _, err := conn.Exec(ctx, insertDomain, "only-in-first.example"); err != nil {
						t.Fatal(err)
					}
				} else {
					<-ready
				}
				var found bool
				if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM domains WHERE name = 'only-in-first.example')").Scan(&found); err != nil {
					t.Fatal(err)
				}
				if found != (i == 0) {
					t.Errorf("database %d: row written in database 0 found = %v", i, found)
				}
			})
		}
	})
	if dbs[0] == "" || dbs[0] == dbs[1] {
		t.Fatalf("databases %q and %q not distinct", dbs[0], dbs[1])
	}
	// Dropped at cleanup.
	admin, err := pgx.Connect(ctx, current.urlFor("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var left int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = ANY($1)", dbs[:]).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d test databases left after cleanup", left)
	}
}

// TestNewURLSharedDatabase opens two stores on one NewURL database, as two
// servers sharing a database would.
func TestNewURLSharedDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := NewURL(t)
	var stores [2]*store.Store
	for i := range stores {
		s, err := store.Open(ctx, u, store.Options{MaxConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		if err := s.Migrate(ctx); err != nil { // already migrated: no-op
			t.Fatal(err)
		}
		stores[i] = s
	}
	if _, err := connect(t, stores[0]).Exec(ctx, insertDomain, "shared.example"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := connect(t, stores[1]).QueryRow(ctx, "SELECT count(*) FROM domains WHERE name = 'shared.example'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("second store sees %d rows, want 1", n)
	}
}
