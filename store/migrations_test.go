package store_test

import (
	"context"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/migrations"
	"github.com/mailstack/mailstack/store/storetest"
)

// TestMigration0004FromVersion3: migration 0004 applies to a database at
// version 3 holding data, moves subscriptions into their table, fills the
// keyword lists, adds no trigger, and keeps mailboxes.subscribed, so that
// an older binary still running during a rolling upgrade can use it. The
// schema versions are built in a schema of their own in a test database.
func TestMigration0004FromVersion3(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, storetest.NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%.60s: %v", sql, err)
		}
	}
	exec(`CREATE SCHEMA upgrade`)
	exec(`SET search_path = upgrade`)
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	apply := func(keep func(version int) bool) {
		t.Helper()
		for _, name := range files {
			num, _, _ := strings.Cut(name, "_")
			v, err := strconv.Atoi(num)
			if err != nil {
				t.Fatal(err)
			}
			if !keep(v) {
				continue
			}
			body, err := fs.ReadFile(migrations.FS, name)
			if err != nil {
				t.Fatal(err)
			}
			if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, string(body))
				return err
			}); err != nil {
				t.Fatalf("apply %s: %v", name, err)
			}
		}
	}
	apply(func(v int) bool { return v <= 3 })

	// Data as version 3 keeps it: two mailboxes, one subscribed, with
	// keywords on their messages.
	exec(`INSERT INTO domains (name, dkim_selector, dkim_key) VALUES ('example.org', 'mail', 'k')`)
	exec(`INSERT INTO accounts (domain_id, address, password_hash) SELECT id, 'a@example.org', 'x' FROM domains`)
	exec(`INSERT INTO mailboxes (account_id, name, uidvalidity, subscribed)
		SELECT id, n, 1, n = 'INBOX' FROM accounts, unnest(ARRAY['INBOX', 'Other']) n`)
	exec(`INSERT INTO messages (sha256, size, header, structure) VALUES ('\x01', 1, '', '{}')`)
	exec(`INSERT INTO mailbox_messages (mailbox_id, uid, message_id, account_id, internal_date, size, keywords, modseq)
		SELECT mb.id, u, (SELECT id FROM messages), mb.account_id, now(), 1, kw, 1
		FROM mailboxes mb, (VALUES (1, ARRAY['Zeta', '$Work']), (2, ARRAY['$Work']), (3, '{}'::text[])) v(u, kw)
		WHERE mb.name = 'INBOX'`)

	apply(func(v int) bool { return v > 3 })

	var subs []string
	if err := conn.QueryRow(ctx, `SELECT array_agg(name ORDER BY name) FROM subscriptions`).Scan(&subs); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(subs, []string{"INBOX"}) {
		t.Errorf("subscriptions after 0004: %q", subs)
	}
	for name, want := range map[string][]string{"INBOX": {"$Work", "Zeta"}, "Other": {}} {
		var got []string
		if err := conn.QueryRow(ctx, `SELECT keywords FROM mailboxes WHERE name = $1`, name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: keywords %q, want %q", name, got, want)
		}
	}
	var triggers int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger
		WHERE tgrelid = 'upgrade.mailbox_messages'::regclass AND NOT tgisinternal`).Scan(&triggers); err != nil {
		t.Fatal(err)
	}
	if triggers != 0 {
		t.Errorf("mailbox_messages has %d triggers; the store keeps the keyword lists itself", triggers)
	}
	// What an older binary does with the column.
	exec(`UPDATE mailboxes SET subscribed = true WHERE name = 'Other'`)
	exec(`INSERT INTO mailboxes (account_id, name, uidvalidity, subscribed) SELECT id, 'Old', 2, true FROM accounts`)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM mailboxes WHERE subscribed`).Scan(&n); err != nil || n != 3 {
		t.Errorf("older binary's subscribed column: %d %v", n, err)
	}
}
