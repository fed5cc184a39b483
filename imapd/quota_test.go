package imapd

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailstack/mailstack/store"
)

// quotaAccount creates an account with a storage quota on e's server and
// logs in to it with imapclient.
func quotaAccount(t *testing.T, e *env, address string, quota int64) *imapclient.Client {
	t.Helper()
	ctx := context.Background()
	acc, err := e.st.CreateAccount(ctx, address, "main-password", store.AccountOptions{QuotaBytes: quota})
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := e.st.CreateAppPassword(ctx, acc.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	c, err := imapclient.DialTLS(e.addr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(address, secret).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

// quotaMsg is a message of exactly n octets.
func quotaMsg(i, n int) string {
	head := fmt.Sprintf("From: bob@example.test\r\nSubject: quota %d\r\nMessage-ID: <q%d@example.test>\r\n\r\n", i, i)
	return head + strings.Repeat("x", n-len(head)-2) + "\r\n"
}

// TestQuota: GETQUOTAROOT and GETQUOTA over TLS with imapclient report
// the account's STORAGE in KiB as it fills; APPEND and COPY past the quota
// are refused with [OVERQUOTA] and store nothing, MOVE is not (it changes
// no usage: the account is one quota root); SETQUOTA is refused; STATUS
// DELETED-STORAGE says what an EXPUNGE frees; an account without a quota
// has the root but no QUOTA response.
func TestQuota(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := quotaAccount(t, e, "quota@example.test", 3000)
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range []imap.Cap{"QUOTA", "QUOTA=RES-STORAGE", "METADATA"} {
		if !caps.Has(cp) {
			t.Errorf("capability %s not offered", cp)
		}
	}
	if caps.Has("QUOTA=RES-MESSAGE") || caps.Has("QUOTASET") {
		t.Errorf("capabilities: %v", caps)
	}
	storage := func(got []imapclient.QuotaData, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var l []string
		for _, q := range got {
			for res, d := range q.Resources {
				l = append(l, fmt.Sprintf("%q %s %d/%d", q.Root, res, d.Usage, d.Limit))
			}
		}
		return strings.Join(l, ", ")
	}
	if got := storage(c.GetQuotaRoot("INBOX").Wait()); got != `"" STORAGE 0/3` {
		t.Errorf("empty: %s", got)
	}
	for i := range 2 {
		appendMsg(t, c, "INBOX", quotaMsg(i, 1100))
	}
	if got := storage(c.GetQuotaRoot("No/Such/Mailbox").Wait()); got != `"" STORAGE 3/3` {
		t.Errorf("2200 octets, asked for a mailbox yet to be created: %s", got)
	}
	q, err := c.GetQuota("").Wait()
	if got := storage([]imapclient.QuotaData{*q}, err); got != `"" STORAGE 3/3` {
		t.Errorf("GETQUOTA: %s", got)
	}
	if _, err := c.GetQuota("other").Wait(); imapType(err) != imap.StatusResponseTypeNo {
		t.Errorf("GETQUOTA of an unknown root: %v", err)
	}
	if err := c.SetQuota("", map[imap.QuotaResourceType]int64{imap.QuotaResourceStorage: 100000}).Wait(); imapType(err) != imap.StatusResponseTypeNo {
		t.Errorf("SETQUOTA: %v", err)
	}

	// Full: 2200 + 1100 > 3000.
	msg := quotaMsg(9, 1100)
	cmd := c.Append("INBOX", int64(len(msg)), nil)
	cmd.Write([]byte(msg))
	cmd.Close()
	if _, err := cmd.Wait(); imapCode(err) != imap.ResponseCodeOverQuota {
		t.Errorf("APPEND over quota: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait(); imapCode(err) != imap.ResponseCodeOverQuota {
		t.Errorf("COPY over quota: %v", err)
	}
	if _, err := c.Move(imap.SeqSetNum(1), "Archive").Wait(); err != nil {
		t.Errorf("MOVE within the quota root: %v", err)
	}
	if got := storage(c.GetQuotaRoot("Archive").Wait()); got != `"" STORAGE 3/3` {
		t.Errorf("after the refusals and the move: %s", got)
	}
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 1 {
		t.Errorf("INBOX after the refusals: %v, %v", st, err)
	}

	// DELETED-STORAGE (imapclient has no field for it: raw).
	r := e.dialRaw()
	r.cmd("LOGIN " + "quota@example.test " + mustAppPassword(t, e, "quota@example.test"))
	r.cmd("SELECT INBOX")
	if got := r.cmd("STATUS INBOX (DELETED DELETED-STORAGE)"); !slices.Equal(got, []string{`* STATUS INBOX (DELETED 0 DELETED-STORAGE 0)`}) {
		t.Errorf("STATUS: %q", got)
	}
	r.cmd(`STORE 1 +FLAGS.SILENT (\Deleted)`)
	if got := r.cmd("STATUS INBOX (DELETED-STORAGE MESSAGES)"); !slices.Equal(got, []string{`* STATUS INBOX (DELETED-STORAGE 2 MESSAGES 1)`}) {
		t.Errorf("STATUS: %q", got)
	}
	for _, c := range []struct{ cmd, want string }{
		{"GETQUOTAROOT INBOX", `* QUOTAROOT INBOX ""|* QUOTA "" (STORAGE 3 3)|OK`},
		{`GETQUOTAROOT "&AMk-t&AOk-"`, `* QUOTAROOT "&AMk-t&AOk-" ""|* QUOTA "" (STORAGE 3 3)|OK`},
		{`GETQUOTA ""`, `* QUOTA "" (STORAGE 3 3)|OK`},
		{`GETQUOTA "x"`, `NO [NONEXISTENT] No such quota root`},
		{`SETQUOTA "" (STORAGE 10000)`, `NO [NOPERM] Quotas are set by the administrator`},
		{`SETQUOTA "" STORAGE`, `BAD`},
		{`GETQUOTA`, `BAD`},
	} {
		untagged, status := r.try(c.cmd)
		if got := strings.Join(append(untagged, status), "|"); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s: %q, want %q", c.cmd, got, c.want)
		}
	}
	// A large APPEND is refused before it is sent.
	if got := r.exchange("APPEND INBOX {300000}\r\n"); !slices.Equal(got, []string{"NO [OVERQUOTA] APPEND: quota exceeded"}) {
		t.Errorf("large APPEND over quota: %q", got)
	}
	r.cmd("EXPUNGE")
	appendMsg(t, c, "INBOX", quotaMsg(10, 500)) // room again

	// No quota: the root, without a QUOTA response.
	u := e.login(nil)
	if got, err := u.GetQuotaRoot("INBOX").Wait(); err != nil || len(got) != 0 {
		t.Errorf("unlimited GETQUOTAROOT: %v, %v", got, err)
	}
	if got, err := u.GetQuota("").Wait(); err != nil || got != nil {
		t.Errorf("unlimited GETQUOTA: %v, %v", got, err)
	}
	ru := e.raw()
	if got, status := ru.try("GETQUOTAROOT INBOX"); !slices.Equal(got, []string{`* QUOTAROOT INBOX ""`}) || !strings.HasPrefix(status, "OK") {
		t.Errorf("unlimited GETQUOTAROOT: %q %s", got, status)
	}
}

// mustAppPassword makes another app password for an account.
func mustAppPassword(t *testing.T, e *env, address string) string {
	t.Helper()
	ctx := context.Background()
	acc, err := e.st.AccountByAddress(ctx, address)
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := e.st.CreateAppPassword(ctx, acc.ID, "raw")
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// BenchmarkQuotaMetadata measures the commands a phone sends on every
// connection (Delta Chat: GETQUOTAROOT, GETMETADATA of its settings;
// iOS: GETQUOTAROOT) over TLS, on an account of 50 mailboxes holding
// 1,000 messages and 200 metadata entries: each is one query.
//
//	go test -run '^$' -bench QuotaMetadata ./imapd/
func BenchmarkQuotaMetadata(b *testing.B) {
	e := newEnv(b, envOptions{})
	ctx := context.Background()
	for i := range 50 {
		if _, err := e.st.CreateMailbox(ctx, e.acc.ID, fmt.Sprintf("Folder %d", i), ""); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 1000 {
		e.deliver("INBOX", quotaMsg(i, 2000))
	}
	var entries []store.MetadataEntry
	for i := range 200 {
		entries = append(entries, store.MetadataEntry{Name: fmt.Sprintf("/private/vendor/app/%d", i), Value: []byte("some setting")})
	}
	if err := e.st.SetMetadata(ctx, e.acc.ID, 0, entries); err != nil {
		b.Fatal(err)
	}
	r := e.raw()
	for _, bc := range []struct{ name, cmd string }{
		{"getquotaroot", "GETQUOTAROOT INBOX"},
		{"getmetadata-2", `GETMETADATA "" (/private/devicetoken /private/vendor/app/7)`},
		{"getmetadata-all", `GETMETADATA (DEPTH infinity) "" /private`},
		{"setmetadata", `SETMETADATA "" (/private/devicetoken "abcdef0123456789")`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for range b.N {
				r.cmd(bc.cmd)
			}
		})
	}
}
