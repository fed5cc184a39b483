package outbound

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// noDNS fails every lookup.
type noDNS struct{}

func (noDNS) LookupMX(context.Context, string) ([]*net.MX, error) {
	return nil, errors.New("no DNS in tests")
}
func (noDNS) LookupIPAddr(context.Context, string) ([]net.IPAddr, error) {
	return nil, errors.New("no DNS in tests")
}

func TestResolverRequired(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New without a Resolver did not panic")
		}
	}()
	New(Config{})
}

func TestParseRelay(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Relay
		wantErr bool
	}{
		{in: "smtp://u:p%40ss@relay.example.net", want: Relay{Host: "relay.example.net", Port: 587, Username: "u", Password: "p@ss"}},
		{in: "smtps://relay.example.net:2465", want: Relay{Host: "relay.example.net", Port: 2465, ImplicitTLS: true}},
		{in: "smtps://u:p@relay.example.net", want: Relay{Host: "relay.example.net", Port: 465, ImplicitTLS: true, Username: "u", Password: "p"}},
		{in: "http://relay.example.net", wantErr: true},
		{in: "smtp://", wantErr: true},
		{in: "smtp://h:99999", wantErr: true},
	} {
		r, err := ParseRelay(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err %v", tc.in, err)
			continue
		}
		if err == nil && *r != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.in, *r, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	w := New(Config{Resolver: noDNS{}})
	for _, tc := range []struct {
		attempts int
		want     string
	}{{1, "5m0s"}, {2, "10m0s"}, {3, "20m0s"}, {6, "2h40m0s"}, {7, "4h0m0s"}, {40, "4h0m0s"}} {
		if got := w.backoff(tc.attempts).String(); got != tc.want {
			t.Errorf("backoff(%d) = %s, want %s", tc.attempts, got, tc.want)
		}
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * 24 * time.Hour: "5 days", 24 * time.Hour: "1 day", 36 * time.Hour: "36h0m0s", 1300 * time.Millisecond: "1.3s",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
}
