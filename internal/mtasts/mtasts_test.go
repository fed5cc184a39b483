package mtasts_test

import (
	"regexp"
	"testing"

	"github.com/mailstack/mailstack/internal/mtasts"
)

func TestPolicy(t *testing.T) {
	enforce := mtasts.New(mtasts.Enforce, "Mail.Example.NET")
	if got, want := enforce.String(), "version: STSv1\r\nmode: enforce\r\nmx: mail.example.net\r\nmax_age: 604800\r\n"; got != want {
		t.Errorf("policy %q, want %q", got, want)
	}
	testing_ := mtasts.New(mtasts.Testing, "mail.example.net")
	tests := []struct {
		name string
		a, b mtasts.Policy
		same bool
	}{
		{"same policy, same id", enforce, mtasts.New(mtasts.Enforce, "mail.example.net"), true},
		{"mode change changes the id", enforce, testing_, false},
		{"mx change changes the id", enforce, mtasts.New(mtasts.Enforce, "mx2.example.net"), false},
	}
	for _, tt := range tests {
		if (tt.a.ID() == tt.b.ID()) != tt.same {
			t.Errorf("%s: %s vs %s", tt.name, tt.a.ID(), tt.b.ID())
		}
	}
	// RFC 8461: id is 1-32 alphanumeric characters.
	if !regexp.MustCompile(`^v=STSv1; id=[0-9a-zA-Z]{1,32}$`).MatchString(enforce.TXT()) {
		t.Errorf("TXT %q", enforce.TXT())
	}
	for _, m := range []string{"enforce", "testing", "none"} {
		if _, err := mtasts.ParseMode(m); err != nil {
			t.Error(err)
		}
	}
	if _, err := mtasts.ParseMode("strict"); err == nil {
		t.Error("bad mode accepted")
	}
}
