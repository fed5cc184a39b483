package smtpd

import "testing"

// TestLimitKey: the per-IP connection limits count IPv4 addresses one by
// one and IPv6 addresses per /64.
func TestLimitKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"}, // IPv4-mapped
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"::1", "::/64"},
		{"fe80::1%eth0", "fe80::1%eth0"}, // not an IP to net.ParseIP: counted as is
	} {
		if got := limitKey(tc.in); got != tc.want {
			t.Errorf("limitKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	l := newIPLimiter(2)
	for _, ip := range []string{"2001:db8::1", "2001:db8::2"} {
		if !l.acquire(limitKey(ip)) {
			t.Fatalf("%s refused within the limit", ip)
		}
	}
	if l.acquire(limitKey("2001:db8::ffff")) {
		t.Error("a third address of the same /64 was let in")
	}
	if !l.acquire(limitKey("2001:db8:0:1::1")) {
		t.Error("another /64 was refused")
	}
}
