package store

import (
	"reflect"
	"testing"
	"time"
)

func TestParseChange(t *testing.T) {
	at := time.UnixMicro(1700000000000000)
	tests := []struct {
		name    string
		payload string
		want    MailboxChange
		wantErr bool
	}{
		{name: "wake-up", payload: "7 42", want: MailboxChange{MailboxID: 7, ModSeq: 42}},
		{name: "stamped", payload: "7 42 1700000000000000", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		{name: "delete", payload: "7 0 1700000000000000", want: MailboxChange{MailboxID: 7, At: at}},
		{name: "inline", payload: "7 42 1700000000000000 + 1234 u 9 6 2 $b $a u 3 0 0  x 5 x 4",
			want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at, UIDValidity: 1234, Changes: &Changes{
				Updated:  []MessageFlags{{UID: 3, Flags: []string{}, ModSeq: 42}, {UID: 9, Flags: []string{`\Seen`, `\Flagged`, "$b", "$a"}, ModSeq: 42}},
				Expunged: []uint32{4, 5},
			}}},
		{name: "inline on a modseq 0 event is ignored", payload: "7 0 1700000000000000 + 1234 u 9 0 0",
			want: MailboxChange{MailboxID: 7, At: at}},
		// Inline changes that do not parse leave a wake-up: a read, not a loss.
		{name: "keyword count past the end", payload: "7 42 1700000000000000 + 1234 u 9 0 3 $a", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		{name: "unknown kind", payload: "7 42 1700000000000000 + 1234 y 9", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		{name: "uid 0", payload: "7 42 1700000000000000 + 1234 x 0", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		{name: "uid too large", payload: "7 42 1700000000000000 + 1234 x 4294967296", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		{name: "bits not a number", payload: "7 42 1700000000000000 + 1234 u 9 z 0", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		{name: "cut short", payload: "7 42 1700000000000000 + 1234 u 9", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		{name: "no changes", payload: "7 42 1700000000000000 + 1234", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at, UIDValidity: 1234, Changes: &Changes{}}},
		{name: "no uidvalidity", payload: "7 42 1700000000000000 +", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		{name: "uidvalidity 0", payload: "7 42 1700000000000000 + 0 x 1", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		{name: "uidvalidity not a number", payload: "7 42 1700000000000000 + u 9 0 0", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		// Later versions may add fields: a wake-up, not an error.
		{name: "unknown fields", payload: "7 42 1700000000000000 u 9 0 0", want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at}},
		// Only ASCII spaces separate: a keyword can hold no other (parseFlags
		// refuses them), but were one there, it must not split.
		{name: "no-break space", payload: "7 42 1700000000000000 + 1234 u 3 0 1 a x 7",
			want: MailboxChange{MailboxID: 7, ModSeq: 42, At: at, UIDValidity: 1234, Changes: &Changes{
				Updated: []MessageFlags{{UID: 3, Flags: []string{"a x 7"}, ModSeq: 42}}}}},
		{name: "one field", payload: "7", wantErr: true},
		{name: "bad id", payload: "x 42", wantErr: true},
		{name: "bad stamp", payload: "7 42 x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeMailboxChange(tt.payload)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v (changes %+v), want %+v (changes %+v)", got, got.Changes, tt.want, tt.want.Changes)
			}
		})
	}
}

func TestParseFlagsAtoms(t *testing.T) {
	for _, tc := range []struct {
		flag string
		ok   bool
	}{
		{"$Forwarded", true}, {"Junk", true}, {"a-b_c.d:e/f+g", true}, {"~!@#&'", true},
		{"", false}, {"a b", false}, {"a\u00a0b", false}, {"caf\u00e9", false}, {"a\tb", false},
		{"a(b", false}, {"a)b", false}, {"a{b", false}, {"a%b", false}, {"a*b", false}, {`a"b`, false},
		{`a\b`, false}, {"a]b", false}, {"a\x7fb", false}, {"a\r\nb", false},
	} {
		_, _, err := parseFlags([]string{tc.flag})
		if (err == nil) != tc.ok {
			t.Errorf("parseFlags(%q): %v, want ok %v", tc.flag, err, tc.ok)
		}
	}
}
