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
	run := e.lineClient(b)
	run("s", "SELECT INBOX", nil)
	b.ResetTimer()
	for b.Loop() {
		var line []byte
		run("c", command, func(l []byte) {
			if bytes.HasPrefix(l, []byte("* "+want)) {
				line = l
			}
		})
		if n := count(line); n != benchMessages {
			b.Fatalf("%s answered %d messages, want %d", command, n, benchMessages)
		}
	}
}

// lineClient logs in over TLS and returns a client that only splits
// lines: run sends a command, hands each untagged line to each (if not
// nil) and fails the benchmark unless the tagged answer is OK.
func (e *benchEnv) lineClient(b *testing.B) (run func(tag, cmd string, each func(line []byte))) {
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	r := bufio.NewReaderSize(conn, 64<<10)
	run = func(tag, cmd string, each func(line []byte)) {
		fmt.Fprintf(conn, "%s %s\r\n", tag, cmd)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				b.Fatal(err)
			}
			if bytes.HasPrefix(line, []byte(tag+" ")) {
				if !bytes.HasPrefix(line, []byte(tag+" OK")) {
					b.Fatalf("%s: %s", cmd, line)
				}
				return
			}
			if each != nil {
				each(line)
			}
		}
	}
	if _, err := r.ReadSlice('\n'); err != nil { // greeting
		b.Fatal(err)
	}
	run("l", fmt.Sprintf("LOGIN %q %q", e.user, e.pass), nil)
	return run
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
