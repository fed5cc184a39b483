package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"golang.org/x/crypto/acme/autocert"

	"github.com/mailstack/mailstack/store/storetest"
)

// TestCertCache checks the autocert.Cache contract on PostgreSQL, with two
// Store handles on one database standing for two mailstack processes.
func TestCertCache(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewURL(t)
	p1, p2 := storetest.Open(t, url).CertCache(), storetest.Open(t, url).CertCache()

	steps := []struct {
		name  string
		do    func() error
		cache autocert.Cache
		key   string
		want  []byte // nil: expect ErrCacheMiss
	}{
		{"miss before any put", nil, p2, "mail.example.org", nil},
		{"put in one process, get in the other", func() error { return p1.Put(ctx, "mail.example.org", []byte("cert-1")) }, p2, "mail.example.org", []byte("cert-1")},
		{"overwrite", func() error { return p2.Put(ctx, "mail.example.org", []byte("cert-2")) }, p1, "mail.example.org", []byte("cert-2")},
		{"binary data round-trips", func() error { return p1.Put(ctx, "acme_account+key", []byte{0, 1, 0xff, '\n'}) }, p2, "acme_account+key", []byte{0, 1, 0xff, '\n'}},
		{"delete", func() error { return p2.Delete(ctx, "mail.example.org") }, p1, "mail.example.org", nil},
		{"delete of a missing key is fine", func() error { return p2.Delete(ctx, "never-there") }, p1, "never-there", nil},
		{"other keys survive a delete", nil, p1, "acme_account+key", []byte{0, 1, 0xff, '\n'}},
	}
	for _, s := range steps {
		if s.do != nil {
			if err := s.do(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		got, err := s.cache.Get(ctx, s.key)
		if s.want == nil {
			if !errors.Is(err, autocert.ErrCacheMiss) {
				t.Errorf("%s: Get = %q, %v; want ErrCacheMiss", s.name, got, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, s.want) {
			t.Errorf("%s: Get = %q, %v; want %q", s.name, got, err, s.want)
		}
	}
}

func TestPingAndQueueDepth(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := st.QueueDepth(ctx)
	if err != nil || n != 0 {
		t.Fatalf("QueueDepth = %d, %v; want 0", n, err)
	}
	st.Close()
	if err := st.Ping(ctx); err == nil {
		t.Error("Ping on a closed store succeeded")
	}
}
