package webui

import (
	"net/url"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// The QR code's URL, rebuilt from the stored secret, says what the key
// newTOTPKey made says (as an authenticator app reads it), and a code from
// it passes checkTOTP.
func TestTOTPURL(t *testing.T) {
	k, err := newTOTPKey("mail.example.org", "ann@example.org")
	if err != nil {
		t.Fatal(err)
	}
	raw := totpURL("mail.example.org", "ann@example.org", k.Secret())
	// otp.NewKeyFromURL assumes defaults for what is missing; apps may not.
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"digits": "6", "algorithm": "SHA1", "period": "30", "issuer": "mail.example.org"} {
		if v := u.Query().Get(p); v != want {
			t.Errorf("%s=%q in %s, want %q", p, v, raw, want)
		}
	}
	got, err := otp.NewKeyFromURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"secret", got.Secret(), k.Secret()},
		{"issuer", got.Issuer(), k.Issuer()},
		{"account", got.AccountName(), k.AccountName()},
		{"digits", got.Digits().String(), k.Digits().String()},
		{"algorithm", got.Algorithm().String(), k.Algorithm().String()},
		{"period", time.Duration(got.Period()).String(), time.Duration(k.Period()).String()},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.what, c.got, c.want)
		}
	}
	now := time.Now()
	code, err := totp.GenerateCodeCustom(got.Secret(), now, totp.ValidateOpts{Period: uint(got.Period()), Digits: got.Digits(), Algorithm: got.Algorithm()})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := checkTOTP(k.Secret(), code, now); !ok {
		t.Errorf("code %s from the URL's key refused", code)
	}
}
