package store_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailstack/mailstack/store"
)

// TestNotifyRoundTrip: what the writers' SQL encodes, the LISTEN
// connection decodes to the same change (stamped with the database's
// clock); a change too large to carry goes as a wake-up.
func TestNotifyRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	long := make([]string, 300)
	for i := range long {
		long[i] = fmt.Sprintf("$keyword-%03d-%s", i, strings.Repeat("k", 20))
	}
	wakeUp := func(id int64, modseq uint64) *store.MailboxChange {
		return &store.MailboxChange{MailboxID: id, ModSeq: modseq}
	}
	tests := []struct {
		name string
		in   store.MailboxChange
		want *store.MailboxChange // nil: in
	}{
		{name: "wake-up", in: store.MailboxChange{MailboxID: 7, ModSeq: 42}},
		{name: "delete or rename", in: store.MailboxChange{MailboxID: 1 << 40}},
		{name: "delivery", in: store.MailboxChange{MailboxID: 7, ModSeq: 42, UIDValidity: 1234, Changes: &store.Changes{
			Updated: []store.MessageFlags{{UID: 9, Flags: []string{`\Seen`, "$Forwarded"}, ModSeq: 42}}}}},
		{name: "flag changes", in: store.MailboxChange{MailboxID: 7, ModSeq: 1 << 50, UIDValidity: 1<<32 - 1, Changes: &store.Changes{
			Updated: []store.MessageFlags{
				{UID: 1, Flags: []string{}, ModSeq: 1 << 50},
				{UID: 3, Flags: []string{`\Answered`, `\Seen`, `\Flagged`, `\Deleted`, `\Draft`}, ModSeq: 1 << 50},
				{UID: 1<<32 - 1, Flags: []string{"$a", "b"}, ModSeq: 1 << 50},
			}}}},
		{name: "expunge", in: store.MailboxChange{MailboxID: 7, ModSeq: 43, UIDValidity: 1234, Changes: &store.Changes{
			Expunged: []uint32{2, 4, 5}}}},
		{name: "both kinds", in: store.MailboxChange{MailboxID: 7, ModSeq: 43, UIDValidity: 1234, Changes: &store.Changes{
			Updated: []store.MessageFlags{{UID: 6, Flags: []string{`\Deleted`}, ModSeq: 43}}, Expunged: []uint32{2}}}},
		{name: "nothing inline", in: store.MailboxChange{MailboxID: 7, ModSeq: 43, UIDValidity: 1234, Changes: &store.Changes{}}},
		{name: "too large to carry", in: store.MailboxChange{MailboxID: 7, ModSeq: 44, UIDValidity: 1234, Changes: &store.Changes{
			Updated: []store.MessageFlags{{UID: 1, Flags: long, ModSeq: 44}}}}, want: wakeUp(7, 44)},
		{name: "inline on a modseq 0 change is dropped", in: store.MailboxChange{MailboxID: 7, UIDValidity: 1234, Changes: &store.Changes{
			Expunged: []uint32{2}}}, want: wakeUp(7, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, err := store.EncodeMailboxChange(ctx, f.st, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if len(payload) >= 8000 {
				t.Fatalf("payload of %d bytes: PostgreSQL refuses it", len(payload))
			}
			got, err := store.DecodeMailboxChange(payload)
			if err != nil {
				t.Fatalf("decode %q: %v", payload, err)
			}
			if d := time.Since(got.At); d < -time.Minute || d > time.Minute {
				t.Fatalf("stamped %v, %v from now", got.At, d)
			}
			got.At = time.Time{}
			want := tt.want
			if want == nil {
				want = &tt.in
			}
			if !reflect.DeepEqual(got, *want) {
				t.Fatalf("payload %q decodes to %+v (changes %+v), want %+v (changes %+v)", payload, got, got.Changes, *want, want.Changes)
			}
		})
	}

	for _, c := range []store.LoginChange{{AccountID: 3}, {AccountID: 1 << 40, AppPasswordID: 1<<63 - 1}} {
		payload, err := store.EncodeLoginChange(ctx, f.st, c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := store.DecodeLoginChange(payload)
		if err != nil || *got != c {
			t.Fatalf("login change %+v: payload %q decodes to %+v, %v", c, payload, got, err)
		}
	}
}
