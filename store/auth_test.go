package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailstack/mailstack/store"
)

// TestThrottlePolicy walks through the policy of store.ThrottlePolicy. The
// delays are recorded, not slept, so the test asserts which attempts wait
// without timing anything; time passing is the recorded attempts moved
// back in the activity log.
func TestThrottlePolicy(t *testing.T) {
	pol := store.ThrottlePolicy{Window: time.Hour, FreeFailures: 2, MaxDelay: time.Second, IPLimit: 8, AccountLimit: 5}
	const (
		home  = "192.0.2.10"    // a household: several users behind one address
		guess = "198.51.100.66" // a guesser
	)
	// One step: n attempts (user and ip may hold %d, the attempt's index),
	// each with result want, wantDelays of them delayed; or, if age is
	// set, every attempt so far moved that far back in time.
	type step struct {
		n          int
		user       string // "alice" and "bob" have accounts, anything else not
		pw         string // "app" (the user's app password), "main" (the main password, for management), or "wrong"
		ip         string
		want       error
		wantDelays int
		age        time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"household: one device failing slows only its own user name", []step{
			{n: 4, user: "alice", pw: "wrong", ip: home, want: store.ErrAuthFailed, wantDelays: 2},
			{n: 1, user: "bob", pw: "app", ip: home},
			{n: 1, user: "bob", pw: "wrong", ip: home, want: store.ErrAuthFailed},
			{n: 1, user: "bob", pw: "app", ip: home},
			{n: 1, user: "nobody", pw: "wrong", ip: home, want: store.ErrAuthFailed},
			// Alice's own device with the right password waits for her
			// failures from this address.
			{n: 1, user: "alice", pw: "app", ip: home, wantDelays: 1},
		}},
		{"the account's failures from anywhere slow its main password, not its app password", []step{
			{n: 4, user: "alice", pw: "wrong", ip: "198.51.100.%d", want: store.ErrAuthFailed, wantDelays: 2},
			{n: 1, user: "alice", pw: "main", ip: "203.0.113.1", wantDelays: 1},
			{n: 1, user: "alice", pw: "app", ip: "203.0.113.2"},
			{n: 1, user: "bob", pw: "wrong", ip: "198.51.100.1", want: store.ErrAuthFailed},
		}},
		{"a guesser across many accounts is refused, right passwords too", []step{
			{n: 8, user: "user%d", pw: "wrong", ip: guess, want: store.ErrAuthFailed},
			{n: 1, user: "alice", pw: "app", ip: guess, want: store.ErrThrottled},
			{n: 1, user: "bob", pw: "main", ip: guess, want: store.ErrThrottled},
			{n: 1, user: "alice", pw: "app", ip: home},
		}},
		{"refused guesses count: a guesser who keeps going stays refused", []step{
			{n: 8, user: "user%d", pw: "wrong", ip: guess, want: store.ErrAuthFailed},
			{age: 40 * time.Minute},
			{n: 8, user: "more%d", pw: "wrong", ip: guess, want: store.ErrThrottled},
			{age: 30 * time.Minute}, // the failures are out of the window, the refusals not
			{n: 1, user: "bob", pw: "app", ip: guess, want: store.ErrThrottled},
			{age: 31 * time.Minute},
			{n: 1, user: "bob", pw: "app", ip: guess},
		}},
		{"users behind a refused address do not keep it refused by retrying", []step{
			{n: 8, user: "user%d", pw: "wrong", ip: home, want: store.ErrAuthFailed},
			{age: 40 * time.Minute},
			// A valid app password's refusals do not count; a user
			// name's other refusals count once.
			{n: 10, user: "alice", pw: "app", ip: home, want: store.ErrThrottled},
			{n: 10, user: "bob", pw: "main", ip: home, want: store.ErrThrottled},
			{age: 30 * time.Minute},
			{n: 1, user: "alice", pw: "app", ip: home},
			{n: 1, user: "bob", pw: "main", ip: home},
		}},
		{"the account limit refuses all but app passwords, and refusals do not extend it", []step{
			{n: 5, user: "alice", pw: "wrong", ip: "198.51.100.%d", want: store.ErrAuthFailed, wantDelays: 3},
			{n: 1, user: "alice", pw: "main", ip: "203.0.113.1", want: store.ErrThrottled},
			{n: 1, user: "alice", pw: "app", ip: "203.0.113.2"},
			{age: 40 * time.Minute},
			{n: 5, user: "alice", pw: "wrong", ip: "198.51.100.%d", want: store.ErrThrottled},
			{age: 30 * time.Minute},
			{n: 1, user: "alice", pw: "main", ip: "203.0.113.1"},
		}},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			delays := 0
			f := newFixtureOpts(t, store.Options{Throttle: store.RecordThrottleDelays(pol, func(time.Duration) { delays++ })})
			secrets := map[string]string{}
			for _, acc := range []*store.Account{f.a, f.b} {
				secret, _, err := f.st.CreateAppPassword(ctx, acc.ID, "phone")
				if err != nil {
					t.Fatal(err)
				}
				secrets[strings.TrimSuffix(acc.Address, "@example.org")] = secret
			}
			conn, err := pgx.ConnectConfig(ctx, f.st.ConnConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			for i, st := range tt.steps {
				if st.age != 0 {
					if _, err := conn.Exec(ctx, `UPDATE auth_events SET at = at - $1::interval`, st.age); err != nil {
						t.Fatal(err)
					}
					continue
				}
				delays = 0
				for k := range st.n {
					user, ip := st.user, st.ip
					if strings.Contains(user, "%d") {
						user = fmt.Sprintf(user, k)
					}
					if strings.Contains(ip, "%d") {
						ip = fmt.Sprintf(ip, k)
					}
					c := store.Credentials{Username: user + "@example.org", Password: "wrong", Protocol: store.ProtocolIMAP, RemoteIP: ip}
					switch st.pw {
					case "app":
						c.Password = secrets[user]
					case "main":
						c.Password, c.Protocol = user+"-main-pw", store.ProtocolManage
					}
					if _, err := f.st.Authenticate(ctx, c); err != st.want { //nolint:errorlint // the very error values the wire sees
						t.Fatalf("step %d, %s (%s from %s), attempt %d: %v, want %v", i, user, st.pw, ip, k+1, err, st.want)
					}
				}
				if delays != st.wantDelays {
					t.Fatalf("step %d (%d × %s, %s from %s): %d attempts delayed, want %d", i, st.n, st.user, st.pw, st.ip, delays, st.wantDelays)
				}
			}
		})
	}
}

// TestLoginClient: the client's description of itself (IMAP ID) reaches
// the activity log and the app password, given with the login or after
// it, cleaned of control characters and cut to 200 bytes; a login without
// one (SMTP) keeps the app password's last client; SetLoginClient is
// scoped by the login's account.
func TestLoginClient(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	secret, _, err := f.st.CreateAppPassword(ctx, f.a.ID, "phone")
	if err != nil {
		t.Fatal(err)
	}
	login := func(pw, proto, client string) (*store.Login, error) {
		return f.st.Authenticate(ctx, store.Credentials{Username: "alice@example.org", Password: pw, Protocol: proto,
			RemoteIP: "192.0.2.1", Client: client})
	}
	newest := func() store.AuthEvent {
		t.Helper()
		evs, err := f.st.AuthEvents(ctx, f.a.ID, 1)
		if err != nil || len(evs) != 1 {
			t.Fatalf("activity: %v %v", evs, err)
		}
		return evs[0]
	}
	lastClient := func() string {
		t.Helper()
		aps, err := f.st.AppPasswords(ctx, f.a.ID)
		if err != nil || len(aps) != 1 {
			t.Fatalf("app passwords: %v %v", aps, err)
		}
		return aps[0].LastClient
	}
	long := strings.Repeat("é", 150) // 300 bytes
	tests := []struct {
		name, pw, proto, client string
		after                   string // SetLoginClient after the login, if not ""
		wantOK                  bool
		wantEvent, wantLast     string
	}{
		{"app password with ID before login", secret, store.ProtocolIMAP, "iPhone Mail 18.2 (iOS 18.2)", "", true,
			"iPhone Mail 18.2 (iOS 18.2)", "iPhone Mail 18.2 (iOS 18.2)"},
		{"SMTP: no client, the last one is kept", secret, store.ProtocolSMTP, "", "", true, "", "iPhone Mail 18.2 (iOS 18.2)"},
		{"ID after login", secret, store.ProtocolIMAP, "", "Thunderbird 128.5", true, "Thunderbird 128.5", "Thunderbird 128.5"},
		{"control characters, bidirectional controls and bad UTF-8 go", secret, store.ProtocolIMAP,
			" Evil\r\n* OK\tmail\x1b[31m\u202e\xff ", "", true, "Evil* OKmail[31m\ufffd", "Evil* OKmail[31m\ufffd"},
		{"cut to 200 bytes at a character boundary", secret, store.ProtocolIMAP, "x" + long, "", true,
			"x" + long[:198], "x" + long[:198]},
		{"a failed login records its client", "wrong", store.ProtocolIMAP, "Outlook 16", "", false, "Outlook 16", "x" + long[:198]},
		{"main password: the event only", "alice-main-pw", store.ProtocolManage, "", "mailstack-cli", true, "mailstack-cli", "x" + long[:198]},
	}
	for _, tt := range tests {
		l, err := login(tt.pw, tt.proto, tt.client)
		if (err == nil) != tt.wantOK {
			t.Fatalf("%s: login: %v", tt.name, err)
		}
		if err == nil {
			if l.EventID == 0 {
				t.Fatalf("%s: login without an event id: %+v", tt.name, l)
			}
			if tt.after != "" {
				if err := f.st.SetLoginClient(ctx, l, tt.after); err != nil {
					t.Fatal(err)
				}
			}
		}
		if ev := newest(); ev.Client != tt.wantEvent || ev.Success != tt.wantOK {
			t.Errorf("%s: event %+v, want client %q", tt.name, ev, tt.wantEvent)
		}
		if got := lastClient(); got != tt.wantLast {
			t.Errorf("%s: app password's last client %q, want %q", tt.name, got, tt.wantLast)
		}
	}

	// Another account's id reaches neither Alice's event nor her app
	// password.
	l, err := login(secret, store.ProtocolIMAP, "Mail")
	if err != nil {
		t.Fatal(err)
	}
	other := *l
	other.AccountID = f.b.ID
	if err := f.st.SetLoginClient(ctx, &other, "Forged"); err != nil {
		t.Fatal(err)
	}
	if ev, last := newest(), lastClient(); ev.Client != "Mail" || last != "Mail" {
		t.Fatalf("SetLoginClient with another account changed %q / %q", ev.Client, last)
	}
	evs, err := f.st.FailedAuthEventsFrom(ctx, "192.0.2.1", 1)
	if err != nil || len(evs) != 1 || evs[0].Client != "Outlook 16" {
		t.Fatalf("failed attempts from the IP: %+v %v", evs, err)
	}
}
