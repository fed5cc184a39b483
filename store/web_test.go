package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
	"github.com/mailstack/mailstack/store/storetest"
)

// TestWebSessionLifetime: a session is found by its token only, not by
// another; it ends when unused too long, when too old, when still
// pending its second factor too long, and when its account is disabled;
// PruneWebSessions removes the expired rows.
func TestWebSessionLifetime(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t)
	if _, err := st.CreateDomain(ctx, "example.org", "mail", []byte("k")); err != nil {
		t.Fatal(err)
	}
	acc, err := st.CreateAccount(ctx, "a@example.org", "password-a", store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, st.ConnConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tests := []struct {
		name    string
		pending bool
		age     string // SQL run on the session's row
		live    bool
	}{
		{"fresh", false, ``, true},
		{"used 6 days ago", false, `UPDATE web_sessions SET last_seen_at = now() - interval '6 days', created_at = now() - interval '20 days'`, true},
		{"unused 8 days", false, `UPDATE web_sessions SET last_seen_at = now() - interval '8 days', created_at = now() - interval '8 days'`, false},
		{"31 days old", false, `UPDATE web_sessions SET created_at = now() - interval '31 days'`, false},
		{"pending 5 minutes", true, `UPDATE web_sessions SET created_at = now() - interval '5 minutes'`, true},
		{"pending 11 minutes", true, `UPDATE web_sessions SET created_at = now() - interval '11 minutes'`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := conn.Exec(ctx, `DELETE FROM web_sessions`); err != nil {
				t.Fatal(err)
			}
			token, err := st.CreateWebSession(ctx, acc.ID, tc.pending, "192.0.2.1", "Browser\x1b[31m")
			if err != nil {
				t.Fatal(err)
			}
			if tc.age != "" {
				if _, err := conn.Exec(ctx, tc.age); err != nil {
					t.Fatal(err)
				}
			}
			ws, err := st.WebSessionByToken(ctx, token)
			if tc.live != (err == nil) {
				t.Fatalf("live %v, lookup: %+v, %v", tc.live, ws, err)
			}
			if !tc.live && !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("expired: %v", err)
			}
			if tc.live && (ws.AccountID != acc.ID || ws.Pending2FA != tc.pending || ws.UserAgent != "Browser[31m" || ws.CSRF == "") {
				t.Fatalf("session %+v", ws)
			}
			n, err := st.PruneWebSessions(ctx)
			if err != nil || (n == 1) == tc.live {
				t.Fatalf("pruned %d, %v", n, err)
			}
		})
	}
	token, err := st.CreateWebSession(ctx, acc.ID, false, "192.0.2.1", "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WebSessionByToken(ctx, token+"x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another token: %v", err)
	}
	if err := st.SetDisabled(ctx, "a@example.org", true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.WebSessionByToken(ctx, token); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session of a disabled account: %v", err)
	}
}
