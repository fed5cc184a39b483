package smtpd

import (
	"crypto"
	"fmt"
	"io"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailstack/mailstack/internal/dkimkey"
	"github.com/mailstack/mailstack/store"
)

// oversigned are the fields signed once more than they occur (RFC 6376
// §5.4.2, "oversigning"): an empty instance is signed too, so a field of
// these names added later (a second From or Subject, a Reply-To) breaks the
// signature instead of being shown as if it were covered. Date and
// Message-ID are always present: submission adds them when missing.
var oversigned = []string{
	"From", "Sender", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
}

// signedWhenPresent are signed as often as they occur (RFC 6376 §5.4.1's
// list): mailing lists legitimately add some of them.
var signedWhenPresent = []string{"Content-Disposition", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"}

// signedKeys returns the DKIM h= list for a message with header h.
func signedKeys(h textproto.Header) []string {
	var keys []string
	for _, k := range oversigned {
		n := len(h.Values(k))
		if (k == "Date" || k == "Message-ID") && n == 0 {
			n = 1 // added by submission in front of h
		}
		for range n + 1 {
			keys = append(keys, k)
		}
	}
	for _, k := range signedWhenPresent {
		for range len(h.Values(k)) {
			keys = append(keys, k)
		}
	}
	return keys
}

// dkimSign reads the whole message from r (streamed, never held in
// memory) and returns a DKIM-Signature header field, CRLF-terminated, for
// domain d, relaxed/relaxed, rsa-sha256. h is the message's header as the
// client sent it (before the fields submission adds in front).
func dkimSign(d *store.Domain, h textproto.Header, r io.Reader) (string, error) {
	key, err := dkimkey.Signer(d.DKIMKey)
	if err != nil {
		return "", err
	}
	keys := signedKeys(h)
	s, err := dkim.NewSigner(&dkim.SignOptions{
		Domain:                 d.Name,
		Selector:               d.DKIMSelector,
		Signer:                 key,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             keys,
	})
	if err != nil {
		return "", fmt.Errorf("dkim: %w", err)
	}
	if _, err := io.Copy(s, r); err != nil {
		s.Close()
		return "", fmt.Errorf("dkim: %w", err)
	}
	if err := s.Close(); err != nil {
		return "", fmt.Errorf("dkim: %w", err)
	}
	return s.Signature(), nil
}
