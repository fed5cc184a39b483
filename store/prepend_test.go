package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/mailstack/mailstack/internal/mimeindex"
	"github.com/mailstack/mailstack/store"
)

// TestSpooledPrepend: a spooled message with trace fields prepended is
// stored exactly as the whole message spooled from scratch would be: the
// same bytes, size, SHA-256 (so one stored content), header and index
// (offsets, sizes, envelope, body structure), also where Prepend must
// index again, and for a message spooled to a file and stored in chunks.
func TestSpooledPrepend(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inbox := f.mailbox(t, f.a, "INBOX")
	bobInbox := f.mailbox(t, f.b, "INBOX")
	trace := "Received: from client.example ([192.0.2.1])\r\n\tby mx.example.org (mailstack) with ESMTPS id 1;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=a@example.com\r\n"
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n", 30000) // 2.3 MB
	for _, tc := range []struct{ name, pre, msg string }{
		{"plain", trace, "From: a@example.com\r\nTo: alice@example.org\r\nSubject: plain\r\n\r\nHello\r\n"},
		{"multipart", trace, "From: a@example.com\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\r\n--b--\r\n"},
		{"nested message/rfc822", trace, "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\r\nsee below\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: in@example.net\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naMOk\r\n--i--\r\n--o--\r\n"},
		{"no final newline", trace, "From: a@example.com\r\nSubject: cut\r\n\r\nthe end"},
		{"bare LF", trace, "From: a@example.com\nSubject: lf\nContent-Type: multipart/mixed; boundary=z\n\n--z\n\nbody\n--z--\n"},
		{"submission's Message-ID and Date", "Received: by mx.example.org;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1.2@mx.example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
			"From: alice@example.org\r\nTo: b@example.net\r\nSubject: no id\r\n\r\nhi\r\n"},
		{"DKIM signature", "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=mail;\r\n\th=from:to; bh=x; b=y\r\n", "From: alice@example.org\r\nTo: b@example.net\r\n\r\nsigned\r\n"},
		{"continuation first (indexed again)", trace, " folded\r\nSubject: x\r\n\r\nbody\r\n"},
		{"Content-Type prepended (indexed again)", "Content-Type: text/html\r\n", "Subject: x\r\n\r\n<p>body</p>\r\n"},
		{"spooled to a file, stored in chunks", trace, "From: a@example.com\r\nSubject: big\r\n\r\n" + big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := store.Spool(strings.NewReader(tc.pre+tc.msg), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer want.Close()
			got, err := store.Spool(strings.NewReader(tc.msg), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			if err := got.Prepend([]byte(tc.pre)); err != nil {
				t.Fatal(err)
			}
			full := tc.pre + tc.msg
			if got.Size != want.Size || got.SHA256 != want.SHA256 {
				t.Errorf("size %d sha %x, want %d %x", got.Size, got.SHA256, want.Size, want.SHA256)
			}
			if g, w := structureJSON(t, got.Structure), structureJSON(t, want.Structure); g != w {
				t.Errorf("index\n got %s\nwant %s", g, w)
			}
			if b, err := io.ReadAll(got.Reader()); err != nil || string(b) != full {
				t.Errorf("Reader: %d bytes (%v), want %d", len(b), err, len(full))
			}
			// ReaderAt across the seam between the fields and the rest.
			for _, off := range []int{0, len(tc.pre) - 5, len(tc.pre), len(full) - 3} {
				b := make([]byte, min(10, len(full)-off))
				if n, err := got.ReaderAt().ReadAt(b, int64(off)); n != len(b) || string(b) != full[off:off+len(b)] {
					t.Errorf("ReadAt(%d) = %q, %v; want %q", off, b[:n], err, full[off:off+len(b)])
				}
			}
			gh, err := got.Header()
			if err != nil {
				t.Fatal(err)
			}
			if wh, _ := want.Header(); !bytes.Equal(gh, wh) {
				t.Errorf("Header %q, want %q", gh, wh)
			}

			// Stored: what is read back is the message from scratch, and
			// the scratch copy delivered to bob is the same content.
			res, err := f.st.Deliver(ctx, got, []store.Target{{AccountID: f.a.ID, MailboxID: inbox.ID}})
			if err != nil {
				t.Fatal(err)
			}
			var meta store.MessageMeta
			err = f.st.FetchMeta(ctx, f.a.ID, inbox.ID, []store.UIDRange{{Start: res[0].UID, Stop: res[0].UID}},
				store.FetchOptions{Structure: true, Header: true}, func(m *store.MessageMeta) error {
					meta = *m
					meta.Header = bytes.Clone(m.Header)
					return nil
				})
			if err != nil {
				t.Fatal(err)
			}
			if g, w := structureJSON(t, meta.Structure), structureJSON(t, want.Structure); g != w {
				t.Errorf("stored index\n got %s\nwant %s", g, w)
			}
			if wh, _ := want.Header(); !bytes.Equal(meta.Header, wh) || meta.Size != want.Size {
				t.Errorf("stored header %q size %d", meta.Header, meta.Size)
			}
			body, err := io.ReadAll(f.st.OpenRange(ctx, f.a.ID, meta.MessageID, 0, meta.Size))
			if err != nil || string(body) != full {
				t.Errorf("stored body: %d bytes (%v), want %d", len(body), err, len(full))
			}
			res2, err := f.st.Deliver(ctx, want, []store.Target{{AccountID: f.b.ID, MailboxID: bobInbox.ID}})
			if err != nil {
				t.Fatal(err)
			}
			if res2[0].MessageID != res[0].MessageID {
				t.Errorf("from scratch stored as content %d, prepended as %d", res2[0].MessageID, res[0].MessageID)
			}
		})
	}
}

func structureJSON(t *testing.T, m *mimeindex.Message) string {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// BenchmarkSpoolTrace: what the MX does with a received message once its
// checks are done, before (spool the trace fields and the message again)
// and now (Prepend), for a small message and one of 200 KB.
func BenchmarkSpoolTrace(b *testing.B) {
	trace := []byte("Received: from client.example ([192.0.2.1])\r\n\tby mx.example.org (mailstack) with ESMTPS id 1;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=a@example.com; dkim=pass header.d=example.com; dmarc=pass header.from=example.com\r\n")
	for _, size := range []int{4 << 10, 200 << 10} {
		msg := "From: a@example.com\r\nTo: alice@example.org\r\nSubject: bench\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n" +
			strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef012345678\r\n", size/76) + "--b--\r\n"
		// Each way returns the message as stored, trace fields in front.
		ways := []struct {
			name string
			add  func(m *store.Spooled) (*store.Spooled, error)
		}{
			{"respool", func(m *store.Spooled) (*store.Spooled, error) {
				defer m.Close()
				return store.Spool(io.MultiReader(bytes.NewReader(trace), m.Reader()), 0)
			}},
			{"prepend", func(m *store.Spooled) (*store.Spooled, error) { return m, m.Prepend(trace) }},
		}
		for _, way := range ways {
			b.Run(fmt.Sprintf("%dKB/%s", size>>10, way.name), func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					m, err := store.Spool(strings.NewReader(msg), 0)
					if err == nil {
						m, err = way.add(m)
					}
					if err != nil {
						b.Fatal(err)
					}
					m.Close()
				}
			})
		}
	}
}
