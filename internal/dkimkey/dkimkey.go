// Package dkimkey creates and publishes DKIM signing keys.
package dkimkey

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
)

// Generate returns a new RSA-2048 private key as PKCS#8 DER, the size every
// verifier accepts (RFC 8301) and DNS TXT records still hold comfortably.
func Generate() ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate DKIM key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode DKIM key: %w", err)
	}
	return der, nil
}

// Signer parses a PKCS#8 DER private key for signing.
func Signer(pkcs8 []byte) (crypto.Signer, error) {
	key, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, fmt.Errorf("parse DKIM key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse DKIM key: %T cannot sign", key)
	}
	return s, nil
}

// TXTRecord returns the DNS TXT value that publishes the public half of a
// PKCS#8 private key, for <selector>._domainkey.<domain>.
func TXTRecord(pkcs8 []byte) (string, error) {
	s, err := Signer(pkcs8)
	if err != nil {
		return "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return "", fmt.Errorf("encode DKIM public key: %w", err)
	}
	alg := "rsa"
	if _, ok := s.Public().(*rsa.PublicKey); !ok {
		alg = "ed25519"
		// RFC 8463: ed25519 records carry the raw 32-byte key.
		pub = pub[len(pub)-32:]
	}
	return fmt.Sprintf("v=DKIM1; k=%s; p=%s", alg, base64.StdEncoding.EncodeToString(pub)), nil
}
