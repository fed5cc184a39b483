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

// signedHeaders are the fields signed when present (RFC 6376 §5.4.1's
// recommendation plus MIME and list headers). Date and Message-ID are
// always present: submission adds them when missing.
var signedHeaders = []string{
	"From", "Sender", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"Content-Disposition", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// dkimSign reads the whole message from r (streamed, never held in
// memory) and returns a DKIM-Signature header field, CRLF-terminated, for
// domain d, relaxed/relaxed, rsa-sha256.
func dkimSign(d *store.Domain, h textproto.Header, r io.Reader) (string, error) {
	key, err := dkimkey.Signer(d.DKIMKey)
	if err != nil {
		return "", err
	}
	var keys []string
	for _, k := range signedHeaders {
		if k == "Date" || k == "Message-ID" || h.Has(k) {
			keys = append(keys, k)
		}
	}
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
