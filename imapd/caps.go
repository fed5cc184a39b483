package imapd

import (
	"strconv"
	"strings"
)

// capabilities are the CAPABILITY lists of the three states that differ.
// The whole list is offered before login too (Outlook decides on it);
// only what concerns authentication changes.
type capabilities struct {
	authenticated string // after login
	tls           string // before login, over TLS
	plain         string // before login, before STARTTLS (port 143)
}

// baseCaps is what every session may use once logged in. IMAP4rev2
// implies LITERAL-, which LITERAL+ supersedes (RFC 7888 §4 advertises
// one of the two).
var baseCaps = []string{
	"IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE",
	"NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN",
	"LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE",
	"ESEARCH", "SEARCHRES", "BINARY", "STATUS=SIZE", "MULTISEARCH", // multisearch.go
	"CONDSTORE", "QRESYNC", // condstore.go
	"QUOTA", "QUOTA=RES-STORAGE", "METADATA", // quota.go, metadata.go
	"PARTIAL", "UIDONLY", "UIDBATCHES", // partial.go, uidonly.go, uidbatches.go
	"SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", // sort.go, thread.go
}

func newCapabilities(appendLimit int64, messageLimit int) capabilities {
	all := strings.Join(baseCaps, " ") + " APPENDLIMIT=" + strconv.FormatInt(appendLimit, 10) +
		" MESSAGELIMIT=" + strconv.Itoa(messageLimit)
	// COMPRESS=DEFLATE needs a login, which needs TLS: offered where
	// logging in is allowed, as Dovecot does.
	return capabilities{
		authenticated: all + " COMPRESS=DEFLATE",
		tls:           all + " COMPRESS=DEFLATE AUTH=PLAIN",
		plain:         all + " STARTTLS LOGINDISABLED",
	}
}

// has reports whether the list offers a capability (for tests and ENABLE).
func (c capabilities) has(name string) bool {
	for _, f := range strings.Fields(c.authenticated) {
		if strings.EqualFold(f, name) {
			return true
		}
	}
	return false
}
