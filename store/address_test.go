package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mailstack/mailstack/store"
)

// TestAddressForms: every store function that takes an address reads it
// by the one rule of internal/mailaddr: white space around it ignored,
// case folded, a trailing dot on the domain dropped, the domain after the
// last @, a +tag cut at the first + unless it leads.
func TestAddressForms(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.st.CreateAlias(ctx, " @Example.ORG. ", "Bob@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := f.st.CreateAlias(ctx, "Info@example.org.", " ALICE@example.org "); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ addr, want string }{
		{" Alice@Example.ORG. ", "alice@example.org"},
		{"alice+x+y@example.org", "alice@example.org"},
		{"INFO+tag@example.org", "alice@example.org"},
		{"+alice@example.org", "bob@example.org"},            // no subaddress: the catch-all's
		{"alice@example.org@example.org", "bob@example.org"}, // local part "alice@example.org"
		{"alice@example.org@other.example", ""},
		{"alice@", ""},
		{"@example.org", ""},
	} {
		acc, err := f.st.ResolveRecipient(ctx, tc.addr)
		got := ""
		if err == nil {
			got = acc.Address
		} else if !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("ResolveRecipient(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	for _, tc := range []struct {
		addr string
		owns bool
	}{
		{"ALICE@example.org.", true},
		{"info+tag@example.org", true},
		// "+tag" is no subaddress: its base would read as the catch-all
		// "@example.org", which is bob's but no one's to send as.
		{"+tag@example.org", false},
		{"alice@example.org@example.org", false},
	} {
		if owns, err := f.st.OwnsAddress(ctx, f.a.ID, tc.addr); err != nil || owns != tc.owns {
			t.Errorf("OwnsAddress(alice, %q) = %v, %v; want %v", tc.addr, owns, err, tc.owns)
		}
		if owns, err := f.st.OwnsAddress(ctx, f.b.ID, tc.addr); err != nil || owns {
			t.Errorf("OwnsAddress(bob, %q) = %v, %v", tc.addr, owns, err)
		}
	}
	if acc, err := f.st.AccountByAddress(ctx, " Alice@Example.org. "); err != nil || acc.ID != f.a.ID {
		t.Errorf("AccountByAddress: %v %v", acc, err)
	}
	if err := f.st.SetDisabled(ctx, " BOB@example.org ", true); err != nil {
		t.Errorf("SetDisabled with white space: %v", err)
	}
	for _, bad := range []string{"a b@example.org", `"a"@example.org`, "a@b@example.org", "<a@example.org>", "a\x01@example.org", "@example.org", "a@."} {
		if _, err := f.st.CreateAccount(ctx, bad, "password-1234", store.AccountOptions{}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CreateAccount(%q): %v, want ErrInvalid", bad, err)
		}
	}
	if err := f.st.CreateAlias(ctx, "@", "alice@example.org"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("CreateAlias(@): %v", err)
	}
	acc, err := f.st.CreateAccount(ctx, "Carol@Example.org.", "password-1234", store.AccountOptions{})
	if err != nil || acc.Address != "carol@example.org" {
		t.Fatalf("CreateAccount with a trailing dot: %v %v", acc, err)
	}
	if err := f.st.DeleteAlias(ctx, "INFO@example.org."); err != nil {
		t.Errorf("DeleteAlias: %v", err)
	}
}
