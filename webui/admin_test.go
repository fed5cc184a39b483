package webui_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/internal/dnscheck/dnstest"
	"github.com/mailstack/mailstack/store"
)

// adminPaths are every administrators' page and form.
var adminPaths = []struct{ method, path string }{
	{"GET", "/admin"}, {"GET", "/admin/users"}, {"GET", "/admin/aliases"}, {"GET", "/admin/domains"},
	{"GET", "/admin/domains/example.org"}, {"GET", "/admin/queue"},
	{"POST", "/admin/users"}, {"POST", "/admin/users/disable"}, {"POST", "/admin/users/delete"},
	{"POST", "/admin/aliases"}, {"POST", "/admin/aliases/delete"}, {"POST", "/admin/domains"},
	{"POST", "/admin/queue/1/retry"},
}

// TestAdminPagesOnlyForAdmins: an account without the flag finds no
// administrators' page (404) and changes nothing; one with it opens all.
func TestAdminPagesOnlyForAdmins(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, store.ThrottlePolicy{})
	bob := e.client(t, e.web)
	bob.mustSignIn("bob@example.org", bobPassword)
	if _, _, body := bob.get("/"); strings.Contains(body, `href="/admin"`) {
		t.Error("a user who is no administrator sees the Admin link")
	}
	for _, p := range adminPaths {
		var code int
		if p.method == "GET" {
			code, _, _ = bob.get(p.path)
		} else {
			code, _, _ = bob.post(p.path, url.Values{"address": {"alice@example.org"}, "confirm": {"alice@example.org"},
				"domain": {"evil.example"}, "password": {"long enough pw"}})
		}
		if code != http.StatusNotFound {
			t.Errorf("%s %s by a user: %d, want 404", p.method, p.path, code)
		}
	}
	if _, err := e.st.AccountByAddress(ctx, "alice@example.org"); err != nil {
		t.Errorf("alice after bob's tries: %v", err)
	}
	if ok, _ := e.st.IsLocalDomain(ctx, "evil.example"); ok {
		t.Error("bob added a domain")
	}
	if err := e.st.SetAdmin(ctx, "alice@example.org", true); err != nil {
		t.Fatal(err)
	}
	alice := e.client(t, e.web)
	alice.mustSignIn("alice@example.org", alicePassword)
	for _, p := range adminPaths {
		if p.method != "GET" {
			continue
		}
		if code, _, body := alice.get(p.path); code != http.StatusOK {
			t.Errorf("GET %s by an administrator: %d %s", p.path, code, body)
		}
	}
}

// TestAdminUsers: an administrator adds a user who then signs in, sets
// its quota, disables (its sessions end), enables, resets its password
// (its sessions end), and deletes it only when the address is typed; an
// administrator cannot disable or delete their own account.
func TestAdminUsers(t *testing.T) {
	ctx := context.Background()
	e, a := adminEnv(t)
	a.get("/admin/users")
	for _, tc := range []struct {
		form url.Values
		want string
	}{
		{url.Values{"address": {"carol@nowhere.example"}, "password": {"carols password"}}, "There is no domain nowhere.example."},
		{url.Values{"address": {"bob@example.org"}, "password": {"carols password"}}, "The account bob@example.org already exists."},
		{url.Values{"address": {"not an address"}, "password": {"carols password"}}, "is not an address of the form user@domain."},
		{url.Values{"address": {"carol@example.org"}, "password": {"short"}}, "at least 8 characters"},
		{url.Values{"address": {"carol@example.org"}, "password": {"carols password"}, "quota": {"-1"}}, "Give the quota in MiB"},
		{url.Values{"address": {"<b>x</b>@example.org"}, "password": {"carols password"}}, "&lt;b&gt;x&lt;/b&gt;@example.org"},
	} {
		code, _, body := a.post("/admin/users", tc.form)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("add %v: %d, want 400 with %q", tc.form, code, tc.want)
		}
	}
	if code, loc, _ := a.post("/admin/users", url.Values{"address": {"Carol@example.org"}, "password": {"carols password"}, "quota": {"100"}}); code != http.StatusSeeOther || loc != "/admin/users?msg=msg.user-created" {
		t.Fatalf("add carol: %d → %q", code, loc)
	}
	carol := e.client(t, e.web)
	carol.mustSignIn("carol@example.org", "carols password")
	if _, _, body := carol.get("/"); !strings.Contains(body, "of 100.0 MiB used") {
		t.Errorf("carol's overview: %s", body)
	}

	change := func(action string, form url.Values, wantCode int) string {
		t.Helper()
		a.get("/admin/users")
		form.Set("address", "carol@example.org")
		code, loc, body := a.post("/admin/users/"+action, form)
		if code != wantCode {
			t.Fatalf("%s: %d → %q %s", action, code, loc, body)
		}
		return body
	}
	change("quota", url.Values{"quota": {"0"}}, http.StatusSeeOther)
	change("disable", url.Values{}, http.StatusSeeOther)
	if code, _, _ := carol.get("/"); code != http.StatusSeeOther {
		t.Errorf("disabled account's session: %d", code)
	}
	if code, _, _ := carol.signIn("carol@example.org", "carols password"); code != http.StatusUnauthorized {
		t.Errorf("disabled account signs in: %d", code)
	}
	change("enable", url.Values{}, http.StatusSeeOther)
	carol.mustSignIn("carol@example.org", "carols password")
	change("password", url.Values{"password": {"carols new password"}}, http.StatusSeeOther)
	if code, _, _ := carol.get("/"); code != http.StatusSeeOther {
		t.Errorf("session after a password reset: %d", code)
	}
	carol.mustSignIn("carol@example.org", "carols new password")
	if body := change("delete", url.Values{"confirm": {"carol@example.com"}}, http.StatusBadRequest); !strings.Contains(body, "type its address") {
		t.Errorf("delete without the right confirmation: %s", body)
	}
	change("delete", url.Values{"confirm": {"carol@example.org"}}, http.StatusSeeOther)
	if _, err := e.st.AccountByAddress(ctx, "carol@example.org"); err == nil {
		t.Error("carol still exists")
	}
	for _, action := range []string{"disable", "delete"} {
		a.get("/admin/users")
		if code, _, _ := a.post("/admin/users/"+action, url.Values{"address": {"alice@example.org"}, "confirm": {"alice@example.org"}}); code != http.StatusBadRequest {
			t.Errorf("%s own account: %d", action, code)
		}
	}
	if code, _, _ := a.post("/admin/users/frobnicate", url.Values{"address": {"bob@example.org"}}); code != http.StatusNotFound {
		t.Errorf("unknown action: %d", code)
	}
}

// TestAdminDomainsAliasesQueue: a domain added on the web gets a DKIM key
// and its records page; aliases are added and deleted; the queue page
// lists nothing and an unknown entry is not found.
func TestAdminDomainsAliasesQueue(t *testing.T) {
	ctx := context.Background()
	e, a := adminEnv(t)
	a.get("/admin/domains")
	code, loc, _ := a.post("/admin/domains", url.Values{"domain": {"New.Example.NET"}})
	if code != http.StatusSeeOther || loc != "/admin/domains/new.example.net?msg=msg.domain-added" {
		t.Fatalf("add domain: %d → %q", code, loc)
	}
	_, _, body := a.get(loc)
	for _, want := range []string{"mailstack._domainkey.new.example.net.", "v=DKIM1", "new.example.net.", "MX", "_mta-sts.new.example.net.", "(mode testing)", "Publish these records"} {
		if !strings.Contains(body, want) {
			t.Errorf("records page lacks %q:\n%s", want, body)
		}
	}
	if code, _, body := a.post("/admin/domains", url.Values{"domain": {"new.example.net"}}); code != http.StatusBadRequest || !strings.Contains(body, "already exists") {
		t.Errorf("domain twice: %d", code)
	}
	if code, _, _ := a.get("/admin/domains/nope.example"); code != http.StatusNotFound {
		t.Errorf("unknown domain's page: %d", code)
	}

	a.get("/admin/aliases")
	if code, _, _ := a.post("/admin/aliases", url.Values{"alias": {"sales@example.org"}, "target": {"bob@example.org"}}); code != http.StatusSeeOther {
		t.Fatalf("add alias: %d", code)
	}
	if acc, err := e.st.ResolveRecipient(ctx, "sales@example.org"); err != nil || acc.ID != e.bob.ID {
		t.Errorf("sales@ resolves to %+v, %v", acc, err)
	}
	if code, _, body := a.post("/admin/aliases", url.Values{"alias": {"x@example.org"}, "target": {"ghost@example.org"}}); code != http.StatusBadRequest || !strings.Contains(body, "There is no account ghost@example.org.") {
		t.Errorf("alias to nobody: %d", code)
	}
	if _, _, body := a.get("/admin/aliases"); !strings.Contains(body, "sales@example.org") {
		t.Error("alias not listed")
	}
	if code, _, _ := a.post("/admin/aliases/delete", url.Values{"alias": {"sales@example.org"}}); code != http.StatusSeeOther {
		t.Errorf("delete alias: %d", code)
	}
	if _, err := e.st.ResolveRecipient(ctx, "sales@example.org"); err == nil {
		t.Error("deleted alias still resolves")
	}

	if _, _, body := a.get("/admin/queue"); !strings.Contains(body, "The queue is empty") {
		t.Errorf("queue page: %s", body)
	}
	for _, p := range []string{"/admin/queue/12345/retry", "/admin/queue/12345/delete"} {
		if code, _, _ := a.post(p, nil); code != http.StatusNotFound {
			t.Errorf("%s: %d", p, code)
		}
	}
	if _, _, body := a.get("/admin"); !strings.Contains(body, "<th>Database</th><td>ok</td>") {
		t.Errorf("health page: %s", body)
	}
}

// adminEnv is an env where alice is an administrator, signed in.
func adminEnv(t *testing.T) (*env, *client) {
	t.Helper()
	e := newEnv(t, store.ThrottlePolicy{})
	if err := e.st.SetAdmin(context.Background(), "alice@example.org", true); err != nil {
		t.Fatal(err)
	}
	a := e.client(t, e.web)
	a.mustSignIn("alice@example.org", alicePassword)
	return e, a
}

// TestAdminDoctor: the domain page runs doctor's checks against the
// configured DNS server and shows the report: what is published is ok,
// what is missing says so.
func TestAdminDoctor(t *testing.T) {
	e, _ := adminEnv(t)
	e.dnsServer = dnstest.Zone(t, "mail.example.org. 60 IN A 127.0.0.1", "example.org. 60 IN MX 10 mail.example.org.")
	a := e.client(t, e.serve(t, e.st))
	a.mustSignIn("alice@example.org", alicePassword)
	a.get("/admin/domains/example.org")
	code, _, body := a.post("/admin/domains/example.org/doctor", nil)
	if code != http.StatusOK {
		t.Fatalf("doctor: %d %s", code, body)
	}
	report := html.UnescapeString(find(t, regexp.MustCompile(`(?s)<pre id="doctor-report">(.*?)</pre>`), body))
	for _, want := range []string{
		`ok +MX +example.org +10 mail.example.org`,
		`missing +TXT +example.org \(SPF\)`,
		`missing +TXT +_dmarc.example.org \(DMARC\)`,
		`lookup mta-sts.example.org on ` + regexp.QuoteMeta(e.dnsServer) + `: no such host`,
		`(?m)^Summary: \d+ ok`,
	} {
		if !regexp.MustCompile(want).MatchString(report) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if code, _, _ := a.post("/admin/domains/nope.example/doctor", nil); code != http.StatusNotFound {
		t.Errorf("doctor of a domain not served: %d", code)
	}
}
