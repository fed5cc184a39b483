package mobileconfig_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"howett.net/plist"

	"github.com/mailstack/mailstack/internal/mobileconfig"
)

func TestProfileRoundTrip(t *testing.T) {
	acc := mobileconfig.Account{
		Address: "alice@example.org", Password: "abcd-efgh-ijkl-mnop",
		IMAPHost: "imap.example.org", IMAPPort: 993, IMAPSSL: true,
		SMTPHost: "smtp.example.org", SMTPPort: 587, SMTPSSL: true,
	}
	p, err := mobileconfig.New(acc)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), `<?xml version="1.0" encoding="UTF-8"?>`) || !strings.Contains(buf.String(), "<!DOCTYPE plist") {
		t.Errorf("not an XML property list:\n%s", buf.String())
	}
	// Decode generically, as a device would, not into our own struct.
	var doc map[string]any
	if _, err := plist.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	uuidRE := regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`)
	if doc["PayloadType"] != "Configuration" || !uuidRE.MatchString(doc["PayloadUUID"].(string)) {
		t.Errorf("top level: %v", doc)
	}
	content := doc["PayloadContent"].([]any)
	if len(content) != 1 {
		t.Fatalf("%d payloads", len(content))
	}
	mail := content[0].(map[string]any)
	want := map[string]any{
		"PayloadType":                      "com.apple.mail.managed",
		"EmailAccountType":                 "EmailTypeIMAP",
		"EmailAddress":                     "alice@example.org",
		"IncomingMailServerHostName":       "imap.example.org",
		"IncomingMailServerPortNumber":     uint64(993),
		"IncomingMailServerUseSSL":         true,
		"IncomingMailServerUsername":       "alice@example.org",
		"IncomingMailServerAuthentication": "EmailAuthPassword",
		"IncomingPassword":                 "abcd-efgh-ijkl-mnop",
		"OutgoingMailServerHostName":       "smtp.example.org",
		"OutgoingMailServerPortNumber":     uint64(587),
		"OutgoingMailServerUseSSL":         true,
		"OutgoingMailServerUsername":       "alice@example.org",
		"OutgoingMailServerAuthentication": "EmailAuthPassword",
		"OutgoingPassword":                 "abcd-efgh-ijkl-mnop",
	}
	for k, v := range want {
		if mail[k] != v {
			t.Errorf("%s = %#v, want %#v", k, mail[k], v)
		}
	}
	if mail["PayloadUUID"] == doc["PayloadUUID"] {
		t.Error("payload UUIDs must differ")
	}

	if _, err := mobileconfig.New(mobileconfig.Account{Address: "a@b.c"}); err == nil {
		t.Error("incomplete account accepted")
	}
}
