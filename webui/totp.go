package webui

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"image/png"
	"net/url"
	"strings"
	"time"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/qr"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// totpPeriod, totpDigits and totpAlgorithm are RFC 6238's defaults, the only settings
// every authenticator app supports.
const (
	totpPeriod    = 30
	totpDigits    = otp.DigitsSix
	totpAlgorithm = otp.AlgorithmSHA1
)

// checkTOTP returns the time step of the code that matches code at now,
// allowing one step of clock drift either way (RFC 6238 §5.2).
func checkTOTP(secret, code string, now time.Time) (int64, bool) {
	code = strings.ReplaceAll(strings.TrimSpace(code), " ", "")
	if len(code) != totpDigits.Length() {
		return 0, false
	}
	for skew := int64(1); skew >= -1; skew-- {
		t := now.Add(time.Duration(skew*totpPeriod) * time.Second)
		want, err := totp.GenerateCodeCustom(secret, t, totp.ValidateOpts{
			Period: totpPeriod, Digits: totpDigits, Algorithm: totpAlgorithm})
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return t.Unix() / totpPeriod, true
		}
	}
	return 0, false
}

// newTOTPKey makes a secret for an account: issuer is the server's host
// name, shown by authenticator apps with the address.
func newTOTPKey(issuer, address string) (*otp.Key, error) {
	k, err := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: address,
		Period: totpPeriod, Digits: totpDigits, Algorithm: totpAlgorithm})
	if err != nil {
		return nil, fmt.Errorf("new TOTP secret: %w", err)
	}
	return k, nil
}

// totpURL is the otpauth:// URL of a secret (Google Authenticator's Key
// Uri Format, which every app reads), for its QR code.
func totpURL(issuer, address, secret string) string {
	v := url.Values{}
	v.Set("secret", secret)
	v.Set("issuer", issuer)
	v.Set("algorithm", totpAlgorithm.String())
	v.Set("digits", totpDigits.String())
	v.Set("period", fmt.Sprint(totpPeriod))
	u := url.URL{Scheme: "otpauth", Host: "totp", Path: "/" + issuer + ":" + address, RawQuery: v.Encode()}
	return u.String()
}

// qrDataURL renders content as a QR code PNG in a data: URL (the CSP
// allows data: images; nothing is fetched from elsewhere).
func qrDataURL(content string) (string, error) {
	code, err := qr.Encode(content, qr.M, qr.Auto)
	if err != nil {
		return "", fmt.Errorf("QR code: %w", err)
	}
	code, err = barcode.Scale(code, 240, 240)
	if err != nil {
		return "", fmt.Errorf("QR code: %w", err)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, code); err != nil {
		return "", fmt.Errorf("QR code: %w", err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b.Bytes()), nil
}
