package mailimport

import (
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestMapFolders maps iCloud's, Gmail's, Outlook's and Courier's folder
// names, with and without SPECIAL-USE.
func TestMapFolders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delim  rune
		attrs  []imap.MailboxAttr
		prefix string
		target string // "" : left out
		all    bool
	}{
		{name: "INBOX", delim: '/', target: "INBOX"},
		{name: "Sent Messages", delim: '/', target: "Sent"},
		{name: "Deleted Messages", delim: '/', target: "Trash"},
		{name: "Junk", delim: '/', target: "Junk"},
		{name: "[Gmail]/Sent Mail", delim: '/', target: "Sent"},
		{name: "[Gmail]/All Mail", delim: '/', target: "Archive", all: true},
		{name: "[Gmail]/Alle Nachrichten", delim: '/', attrs: []imap.MailboxAttr{imap.MailboxAttrAll}, target: "Archive", all: true},
		{name: "[Gmail]/Starred", delim: '/'},
		{name: "[Gmail]/Wichtig", delim: '/', attrs: []imap.MailboxAttr{imap.MailboxAttrImportant}},
		{name: "[Gmail]", delim: '/', attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}},
		{name: "Gesendet", delim: '/', attrs: []imap.MailboxAttr{imap.MailboxAttrSent}, target: "Sent"},
		{name: "Sent Items", delim: '/', target: "Sent"},
		{name: "Work/Projects", delim: '/', target: "Work/Projects"},
		{name: "INBOX.Work.Projects", delim: '.', prefix: "INBOX.", target: "Work/Projects"},
		{name: "INBOX.Sent", delim: '.', prefix: "INBOX.", target: "Sent"},
		{name: "a/b.c", delim: '.', target: "a_b/c"},
	} {
		folders, _ := mapFolders([]*imap.ListData{{Mailbox: tc.name, Delim: tc.delim, Attrs: tc.attrs}}, tc.prefix)
		got, all := "", false
		if len(folders) == 1 {
			got, all = folders[0].target, folders[0].all
		}
		if got != tc.target || all != tc.all {
			t.Errorf("%s: to %q (all %v), want %q (all %v)", tc.name, got, all, tc.target, tc.all)
		}
	}
}

// TestParseSource: the URL forms taken, the password never in it.
func TestParseSource(t *testing.T) {
	for _, tc := range []struct{ url, addr, key, err string }{
		{url: "imaps://alice@icloud.com@imap.mail.me.com", addr: "imap.mail.me.com:993", key: "imaps://alice%40icloud.com@imap.mail.me.com:993"},
		{url: "imap://bob@127.0.0.1:1143", addr: "127.0.0.1:1143", key: "imap://bob@127.0.0.1:1143"},
		{url: "imaps://bob:secret@host", err: "never in the URL"},
		{url: "https://bob@host", err: "scheme"},
		{url: "imaps://host", err: "no user name"},
	} {
		s, err := parseSource(IMAPSource{URL: tc.url})
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.url, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.url, err)
		case s.addr != tc.addr || s.key != tc.key:
			t.Errorf("%s: %s %s, want %s %s", tc.url, s.addr, s.key, tc.addr, tc.key)
		}
	}
}
