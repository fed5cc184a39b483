package webui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/store"
)

// TestAccountChangesEndWebSessions: what an administrator does to take an
// account back (disable it, reset its password), from the CLI or the
// admin pages, ends the account's browser sessions for good: enabling
// the account again does not bring a stolen cookie back to life.
func TestAccountChangesEndWebSessions(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		change func(t *testing.T, e *env, admin *client)
	}{
		{"CLI disable then enable", func(t *testing.T, e *env, _ *client) {
			if err := e.st.SetDisabled(ctx, "bob@example.org", true); err != nil {
				t.Fatal(err)
			}
			if err := e.st.SetDisabled(ctx, "bob@example.org", false); err != nil {
				t.Fatal(err)
			}
		}},
		{"CLI password", func(t *testing.T, e *env, _ *client) {
			if err := e.st.SetPassword(ctx, "bob@example.org", "a new password"); err != nil {
				t.Fatal(err)
			}
		}},
		{"admin page disable then enable", func(t *testing.T, e *env, admin *client) {
			for _, action := range []string{"disable", "enable"} {
				admin.get("/admin/users")
				if code, _, body := admin.post("/admin/users/"+action, url.Values{"address": {"bob@example.org"}}); code != http.StatusSeeOther {
					t.Fatalf("%s: %d %s", action, code, body)
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, admin := adminEnv(t)
			bob := e.client(t, e.web)
			bob.mustSignIn("bob@example.org", bobPassword)
			tc.change(t, e, admin)
			if code, loc, _ := bob.get("/"); code != http.StatusSeeOther || loc != "/signin" {
				t.Errorf("bob's old session: %d → %q, want 303 → /signin", code, loc)
			}
			if ss, err := e.st.WebSessions(ctx, e.bob.ID); err != nil || len(ss) != 0 {
				t.Errorf("bob's sessions left: %+v, %v", ss, err)
			}
			if code, _, _ := admin.get("/admin/users"); code != http.StatusOK {
				t.Errorf("the administrator's own session: %d", code)
			}
		})
	}
}

// TestTwoFactorChangeNeedsPassword: turning two-factor authentication on,
// or moving it to another phone, takes the main password as turning it
// off does: someone at a browser left signed in must not tie the account
// to their own phone (and get its recovery codes), which would lock the
// owner out at the next sign-in.
func TestTwoFactorChangeNeedsPassword(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		current string
		want    int
	}{
		{"no password", "", http.StatusUnauthorized},
		{"wrong password", "guess", http.StatusUnauthorized},
		{"right password", alicePassword, http.StatusOK},
	}
	for _, enabled := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("enabled %v, %s", enabled, tc.name), func(t *testing.T) {
				e := newEnv(t, store.ThrottlePolicy{})
				c := e.client(t, e.web)
				c.mustSignIn("alice@example.org", alicePassword)
				var before string
				if enabled {
					c.enableTOTP(e.clock, alicePassword)
					var err error
					if before, err = e.st.TOTPSecret(ctx, e.alice.ID); err != nil {
						t.Fatal(err)
					}
				}
				c.get("/security")
				if code, _, body := c.post("/security/2fa/start", nil); code != http.StatusSeeOther {
					t.Fatalf("start: %d %s", code, body)
				}
				_, _, body := c.get("/security")
				secret := find(t, secretField, body)
				code, _, body := c.post("/security/2fa/confirm", url.Values{"code": {e.clock.code(t, secret)}, "current": {tc.current}})
				if code != tc.want {
					t.Fatalf("confirm: %d, want %d: %s", code, tc.want, body)
				}
				after, err := e.st.TOTPSecret(ctx, e.alice.ID)
				if err != nil {
					t.Fatal(err)
				}
				if changed := after == secret; changed != (tc.want == http.StatusOK) {
					t.Errorf("secret changed: %v (before %q, after %q)", changed, before, after)
				}
				if tc.want != http.StatusOK && (after != before || strings.Contains(body, `id="recovery-codes"`)) {
					t.Errorf("refused change left secret %q (was %q) or showed recovery codes", after, before)
				}
			})
		}
	}
}
