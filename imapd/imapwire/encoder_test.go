package imapwire

import (
	"bytes"
	"testing"
	"time"
)

// Date writes four-digit years whatever the instant.
func TestEncoderDate(t *testing.T) {
	utc := time.UTC
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2024, 5, 6, 7, 8, 9, 0, time.FixedZone("", 2*3600)), `"06-May-2024 07:08:09 +0200"`},
		{time.Date(10000, 1, 1, 11, 59, 59, 0, utc), `"31-Dec-9999 23:59:59 -1200"`},
		{time.Date(-1, 12, 31, 10, 0, 0, 0, utc), `"01-Jan-0000 00:00:00 +1400"`},
		// Beyond what an offset brings back (an imported date): the end
		// of the range.
		{time.Date(10000, 6, 1, 0, 0, 0, 0, utc), `"31-Dec-9999 23:59:59 -1200"`},
		{time.Date(-5, 6, 1, 0, 0, 0, 0, utc), `"01-Jan-0000 00:00:00 +1400"`},
	} {
		var b bytes.Buffer
		e := NewEncoder(&b)
		e.Date(tc.in)
		if err := e.Flush(); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("Date(%v) = %s, want %s", tc.in, b.String(), tc.want)
		}
	}
}
