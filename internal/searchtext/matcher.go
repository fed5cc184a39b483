package searchtext

import "bytes"

// Matcher finds case-folded needles in a stream of UTF-8 text written in
// arbitrary pieces (matches spanning pieces and chunk boundaries are
// found). It keeps only the last (longest needle - 1) bytes between
// writes. It is a Sink.
type Matcher struct {
	needles [][]byte
	found   []bool
	left    int
	keep    int
	window  []byte
	pending []byte // an incomplete UTF-8 sequence at the end of the last write
}

// NewMatcher returns a matcher of the needles, which must be folded
// (Fold). An empty needle is found at once.
func NewMatcher(needles []string) *Matcher {
	m := &Matcher{found: make([]bool, len(needles)), left: len(needles)}
	for i, s := range needles {
		m.needles = append(m.needles, []byte(s))
		if s == "" {
			m.found[i] = true
			m.left--
		}
		m.keep = max(m.keep, len(s)-1)
	}
	return m
}

// Found reports whether needle i has been found.
func (m *Matcher) Found(i int) bool { return m.found[i] }

// Done reports whether every needle has been found.
func (m *Matcher) Done() bool { return m.left == 0 }

// StartPart starts a new part: no match spans parts.
func (m *Matcher) StartPart() {
	m.window = m.window[:0]
	m.pending = m.pending[:0]
}

// Write looks for the needles in p, with what the part held before.
func (m *Matcher) Write(p []byte) (int, error) {
	n := len(p)
	if m.Done() {
		return n, ErrDone
	}
	data := p
	if len(m.pending) > 0 {
		data = append(m.pending, p...)
	}
	cut := IncompleteTail(data)
	tail := data[cut:]
	m.window = AppendFold(m.window, data[:cut])
	m.pending = append(m.pending[:0], tail...)
	m.search()
	if m.Done() {
		return n, ErrDone
	}
	return n, nil
}

// EndPart ends a part.
func (m *Matcher) EndPart() {
	if len(m.pending) > 0 && !m.Done() {
		m.window = append(m.window, m.pending...)
		m.pending = m.pending[:0]
		m.search()
	}
}

func (m *Matcher) search() {
	for i, nd := range m.needles {
		if !m.found[i] && bytes.Contains(m.window, nd) {
			m.found[i] = true
			m.left--
		}
	}
	if len(m.window) > m.keep {
		m.window = append(m.window[:0], m.window[len(m.window)-m.keep:]...)
	}
}
