package webui_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
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
