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
	conn, exec, apply := upgradeSchema(t)
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

// upgradeSchema connects to a fresh test database with the search path set
// to a new, empty schema, and returns exec, which runs a statement there,
// and apply, which applies the migrations whose version keep accepts, in
// order: what a test of a migration on a database holding data needs.
func upgradeSchema(t *testing.T) (conn *pgx.Conn, exec func(sql string, args ...any), apply func(keep func(version int) bool)) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, storetest.NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	exec = func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%.60s: %v", sql, err)
		}
	}
	exec(`CREATE SCHEMA upgrade`)
	exec(`SET search_path = upgrade, public`) // public: extensions (pg_trgm) the template has
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	apply = func(keep func(version int) bool) {
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
	return conn, exec, apply
}

// TestMigration0007FromVersion6: migration 0007 applies to a database at
// version 6 holding data: nothing is \Recent afterwards (every mailbox's
// mark is at its UIDNEXT), old login events have no client and app
// passwords no last client; and what an older binary still running during
// a rolling upgrade writes, without the new columns, takes their defaults
// (a new mailbox's mark at its UIDNEXT, 1).
func TestMigration0007FromVersion6(t *testing.T) {
	ctx := context.Background()
	conn, exec, apply := upgradeSchema(t)
	apply(func(v int) bool { return v <= 6 })

	exec(`INSERT INTO domains (name, dkim_selector, dkim_key) VALUES ('example.org', 'mail', 'k')`)
	exec(`INSERT INTO accounts (domain_id, address, password_hash) SELECT id, 'a@example.org', 'x' FROM domains`)
	exec(`INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext, messages)
		SELECT id, n, 1, u, u - 1 FROM accounts, (VALUES ('INBOX', 4), ('Empty', 1)) v(n, u)`)
	exec(`INSERT INTO messages (sha256, size, header, structure) VALUES ('\x01', 1, '', '{}')`)
	exec(`INSERT INTO mailbox_messages (mailbox_id, uid, message_id, account_id, internal_date, size, modseq)
		SELECT mb.id, u, (SELECT id FROM messages), mb.account_id, now(), 1, 1
		FROM mailboxes mb, generate_series(1, 3) u WHERE mb.name = 'INBOX'`)
	exec(`INSERT INTO app_passwords (account_id, label, hash, last_used_at, last_used_ip)
		SELECT id, 'phone', '\x02', now(), '192.0.2.1' FROM accounts`)
	exec(`INSERT INTO auth_events (account_id, username, protocol, remote_ip, app_password_id, success)
		SELECT a.id, a.address, 'imap', '192.0.2.1', p.id, true FROM accounts a JOIN app_passwords p ON p.account_id = a.id`)

	apply(func(v int) bool { return v > 6 })

	marks := func() map[string]int64 {
		t.Helper()
		rows, err := conn.Query(ctx, `SELECT name, first_recent_uid - uidnext FROM mailboxes`)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int64{}
		var name string
		var d int64
		if _, err := pgx.ForEachRow(rows, []any{&name, &d}, func() error { m[name] = d; return nil }); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if got := marks(); len(got) != 2 || got["INBOX"] != 0 || got["Empty"] != 0 {
		t.Errorf("first_recent_uid - uidnext after 0007: %v, want 0 for both", got)
	}
	var client string
	var lastClient *string
	if err := conn.QueryRow(ctx, `SELECT e.client, p.last_client FROM auth_events e JOIN app_passwords p ON p.id = e.app_password_id`).
		Scan(&client, &lastClient); err != nil || client != "" || lastClient != nil {
		t.Errorf("old login: client %q, app password's last client %v (%v); want empty and NULL", client, lastClient, err)
	}
	// What an older binary writes.
	exec(`INSERT INTO mailboxes (account_id, name, uidvalidity) SELECT id, 'New', 2 FROM accounts`)
	exec(`INSERT INTO auth_events (account_id, username, protocol, remote_ip, success) SELECT id, address, 'smtp', '192.0.2.2', false FROM accounts`)
	if got := marks(); got["New"] != 0 {
		t.Errorf("older binary's new mailbox: first_recent_uid - uidnext = %d", got["New"])
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM auth_events WHERE client = ''`).Scan(&n); err != nil || n != 2 {
		t.Errorf("events without a client: %d %v", n, err)
	}
}
