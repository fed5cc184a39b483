package store_test

import (
	"context"
	"errors"
	"strings"
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
	st, acc := webAccount(t)
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

// TestWebSignInAndSecondFactor: the web takes the main password even
// where IMAP requires app passwords, and never an app password; a TOTP
// step and a recovery code work once; wrong codes end a pending session.
func TestWebSignInAndSecondFactor(t *testing.T) {
	ctx := context.Background()
	st, acc := webAccount(t)
	secret, _, err := st.CreateAppPassword(ctx, acc.ID, "phone")
	if err != nil {
		t.Fatal(err)
	}
	web := func(pw string) error {
		_, err := st.Authenticate(ctx, store.Credentials{Username: "a@example.org", Password: pw, Protocol: store.ProtocolWeb, RemoteIP: "192.0.2.1"})
		return err
	}
	if err := web("password-a"); err != nil {
		t.Errorf("main password on the web: %v", err)
	}
	if err := web(secret); !errors.Is(err, store.ErrAuthFailed) {
		t.Errorf("app password on the web: %v", err)
	}
	evs, err := st.AuthEvents(ctx, acc.ID, 1)
	if err != nil || len(evs) != 1 || evs[0].Reason != store.ReasonWrongPassword || evs[0].AppPassword != "" {
		t.Errorf("activity of the app password's try: %+v, %v", evs, err)
	}

	token, ws := signIn(t, st, acc.ID, false)
	if err := st.SetTOTPSetup(ctx, acc.ID, ws.ID, "JBSWY3DPEHPK3PXP"); err != nil {
		t.Fatal(err)
	}
	if ws, _ = st.WebSessionByToken(ctx, token); ws.TOTPSetup != "JBSWY3DPEHPK3PXP" || ws.TOTPEnabled {
		t.Fatalf("during set-up: %+v", ws)
	}
	codes, err := st.EnableTOTP(ctx, acc.ID, ws.ID, "JBSWY3DPEHPK3PXP", 100)
	if err != nil || len(codes) != store.RecoveryCodeCount {
		t.Fatal(codes, err)
	}
	if ws, _ = st.WebSessionByToken(ctx, token); ws.TOTPSetup != "" || !ws.TOTPEnabled {
		t.Fatalf("after set-up: %+v", ws)
	}
	for _, tc := range []struct {
		step int64
		ok   bool
	}{{100, false}, {99, false}, {101, true}, {101, false}, {103, true}} {
		if ok, err := st.UseTOTPStep(ctx, acc.ID, tc.step); err != nil || ok != tc.ok {
			t.Errorf("step %d: %v, %v; want %v", tc.step, ok, err, tc.ok)
		}
	}
	for i, want := range []bool{true, false} {
		if ok, err := st.UseRecoveryCode(ctx, acc.ID, strings.ToUpper(codes[3])); err != nil || ok != want {
			t.Errorf("recovery code, use %d: %v, %v", i+1, ok, err)
		}
	}
	if n, err := st.RecoveryCodesLeft(ctx, acc.ID); err != nil || n != store.RecoveryCodeCount-1 {
		t.Errorf("codes left: %d, %v", n, err)
	}
	pending, pws := signIn(t, st, acc.ID, true)
	for i := 1; i <= store.WebMaxSecondFactorFailures; i++ {
		gone, err := st.FailWebSecondFactor(ctx, acc.ID, pws.ID)
		if err != nil || gone != (i == store.WebMaxSecondFactorFailures) {
			t.Fatalf("failure %d: gone %v, %v", i, gone, err)
		}
	}
	if _, err := st.WebSessionByToken(ctx, pending); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("pending session after the failures: %v", err)
	}
	if err := st.DisableTOTP(ctx, acc.ID); err != nil {
		t.Fatal(err)
	}
	if s, err := st.TOTPSecret(ctx, acc.ID); err != nil || s != "" {
		t.Errorf("secret after disabling: %q, %v", s, err)
	}
	if ok, _ := st.UseRecoveryCode(ctx, acc.ID, codes[4]); ok {
		t.Error("recovery code after disabling 2FA")
	}
}

// webAccount returns a fresh store with one account, a@example.org,
// password "password-a".
func webAccount(t testing.TB) (*store.Store, *store.Account) {
	t.Helper()
	ctx := context.Background()
	st := storetest.New(t)
	if _, err := st.CreateDomain(ctx, "example.org", "mail", []byte("k")); err != nil {
		t.Fatal(err)
	}
	acc, err := st.CreateAccount(ctx, "a@example.org", "password-a", store.AccountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return st, acc
}

// signIn starts a web session and returns its token and row.
func signIn(t *testing.T, st *store.Store, accountID int64, pending bool) (string, *store.WebSession) {
	t.Helper()
	ctx := context.Background()
	token, err := st.CreateWebSession(ctx, accountID, pending, "192.0.2.1", "b")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := st.WebSessionByToken(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	return token, ws
}

// BenchmarkWebSessionByToken: the cost every account web request pays to
// find and touch its session (one UPDATE … RETURNING).
func BenchmarkWebSessionByToken(b *testing.B) {
	ctx := context.Background()
	st, acc := webAccount(b)
	token, err := st.CreateWebSession(ctx, acc.ID, false, "192.0.2.1", "b")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := st.WebSessionByToken(ctx, token); err != nil {
			b.Fatal(err)
		}
	}
}
