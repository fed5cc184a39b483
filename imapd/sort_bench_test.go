package imapd

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"testing"
)

// SORT and THREAD on the 100,000 messages of BenchmarkIMAP's mailbox
// (issue 13: SORT (REVERSE DATE) under 200 ms, THREAD REFERENCES under
// 500 ms), read by a client that only splits the answer.

func (e *benchEnv) benchSortThread(b *testing.B, command, want string, count func(line []byte) int) {
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	r := bufio.NewReaderSize(conn, 64<<10)
	// run sends a command and returns its untagged answer named want.
	run := func(tag, cmd string) []byte {
		fmt.Fprintf(conn, "%s %s\r\n", tag, cmd)
		var answer []byte
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				b.Fatal(err)
			}
			if bytes.HasPrefix(line, []byte(tag+" ")) {
				if !bytes.HasPrefix(line, []byte(tag+" OK")) {
					b.Fatalf("%s: %s", cmd, line)
				}
				return answer
			}
			if bytes.HasPrefix(line, []byte("* "+want)) {
				answer = line
			}
		}
	}
	if _, err := r.ReadSlice('\n'); err != nil { // greeting
		b.Fatal(err)
	}
	run("l", fmt.Sprintf("LOGIN %q %q", e.user, e.pass))
	run("s", "SELECT INBOX")
	b.ResetTimer()
	for b.Loop() {
		line := run("c", command)
		if n := count(line); n != benchMessages {
			b.Fatalf("%s answered %d messages, want %d", command, n, benchMessages)
		}
	}
}

// countNumbers counts the numbers of a SORT or THREAD answer.
func countNumbers(line []byte) int {
	n := 0
	in := false
	for _, c := range line {
		digit := c >= '0' && c <= '9'
		if digit && !in {
			n++
		}
		in = digit
	}
	return n
}

func (e *benchEnv) benchSortReverseDate(b *testing.B) {
	e.benchSortThread(b, "UID SORT (REVERSE DATE) UTF-8 ALL", "SORT", countNumbers)
}

func (e *benchEnv) benchSortSubject(b *testing.B) {
	e.benchSortThread(b, "UID SORT (SUBJECT) UTF-8 ALL", "SORT", countNumbers)
}

func (e *benchEnv) benchThreadReferences(b *testing.B) {
	e.benchSortThread(b, "UID THREAD REFERENCES UTF-8 ALL", "THREAD", countNumbers)
}

func (e *benchEnv) benchThreadOrderedSubject(b *testing.B) {
	e.benchSortThread(b, "UID THREAD ORDEREDSUBJECT UTF-8 ALL", "THREAD", countNumbers)
}
