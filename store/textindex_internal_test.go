package store

import "testing"

func TestHasTrigram(t *testing.T) {
	for _, tc := range []struct {
		s               string
		ascii, wideWord bool
	}{
		{"budget", true, true},
		{"ab", false, false},
		{"a b c", false, false},
		{"x-1y", false, false},
		{"1y2", true, true},
		{"встреча", false, true},
		{"caf\u00e9", true, true},
		{"ca\u00e9f", false, true},
		{"会議報告", false, true},
		{"", false, false},
	} {
		if got := hasTrigram(tc.s, true); got != tc.ascii {
			t.Errorf("hasTrigram(%q, ascii only) = %v", tc.s, got)
		}
		if got := hasTrigram(tc.s, false); got != tc.wideWord {
			t.Errorf("hasTrigram(%q) = %v", tc.s, got)
		}
	}
}
