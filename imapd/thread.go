package imapd

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/mailstack/mailstack/store"
)

// THREAD (RFC 5256 §2.2 ORDEREDSUBJECT and §2.3 REFERENCES): the store
// reads the needed keys of the matching messages in one query; the
// algorithms run here, with maps, in memory proportional to the result.

// cmdThread is THREAD and UID THREAD.
func (s *session) cmdThread(c *cmd) error {
	if err := c.d.SP(); err != nil {
		return err
	}
	alg, err := c.d.Atom()
	if err != nil {
		return err
	}
	alg = strings.ToUpper(alg)
	if alg != "REFERENCES" && alg != "ORDEREDSUBJECT" {
		return bad("Unknown threading algorithm " + truncate(alg))
	}
	criteria, p, err := s.readSearchProgram(c)
	if err != nil {
		return err
	}
	view, sc := s.viewCriteria(criteria, p)
	var msgs []store.ThreadMessage
	if sc != nil {
		msgs, err = s.srv.st.ThreadMessages(s.ctx, s.accountID(), s.mailbox.ID, sc, alg == "REFERENCES")
		if err != nil {
			return storeError(err, "THREAD")
		}
	}
	// Only messages of the view (sequence numbers are the view's).
	nums := make(map[uint32]uint32, len(msgs))
	msgs = slices.DeleteFunc(msgs, func(m store.ThreadMessage) bool {
		j, ok := slices.BinarySearch(view, m.UID)
		if ok {
			nums[m.UID] = uint32(j + 1)
		}
		return !ok
	})
	var roots []*threadNode
	if alg == "REFERENCES" {
		roots = threadReferences(msgs)
	} else {
		roots = threadOrderedSubject(msgs)
	}
	num := func(m *store.ThreadMessage) uint32 {
		if c.uid {
			return m.UID
		}
		return nums[m.UID]
	}
	s.enc.Star().Raw("THREAD").Raw(string(appendThreads(nil, roots, num))).CRLF()
	return nil
}

// threadNode is a message, or a dummy (msg nil) standing for a message
// that is referenced but not in the result.
type threadNode struct {
	msg      *store.ThreadMessage
	seq      int // index of msg in the input (sequence order): ties
	parent   *threadNode
	children []*threadNode
}

// rep is the message a node is dated and titled by: its own, or a dummy's
// first child's (children sorted first).
func (n *threadNode) rep() *threadNode {
	for n.msg == nil && len(n.children) > 0 {
		n = n.children[0]
	}
	return n
}

// compareDate orders nodes by sent date, then sequence order (RFC 5256
// §2.2 DATE with its tie-break).
func compareDate(a, b *threadNode) int {
	a, b = a.rep(), b.rep()
	if a.msg == nil || b.msg == nil {
		return cmp.Compare(a.seq, b.seq)
	}
	if c := a.msg.Date.Compare(b.msg.Date); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// threadOrderedSubject is ORDEREDSUBJECT: messages grouped by base subject;
// in each group the earliest is the parent of the others (siblings, by
// date); groups ordered by the date of their first message.
func threadOrderedSubject(msgs []store.ThreadMessage) []*threadNode {
	nodes := make([]*threadNode, len(msgs))
	for i := range msgs {
		nodes[i] = &threadNode{msg: &msgs[i], seq: i}
	}
	slices.SortFunc(nodes, func(a, b *threadNode) int {
		if c := strings.Compare(a.msg.Subject, b.msg.Subject); c != 0 {
			return c
		}
		return compareDate(a, b)
	})
	var roots []*threadNode
	for i := 0; i < len(nodes); {
		j := i + 1
		for j < len(nodes) && nodes[j].msg.Subject == nodes[i].msg.Subject {
			nodes[i].children = append(nodes[i].children, nodes[j])
			j++
		}
		roots = append(roots, nodes[i])
		i = j
	}
	slices.SortFunc(roots, compareDate)
	return roots
}

// threadReferences is REFERENCES (RFC 5256 §2.2, after JWZ), steps 1-6.
func threadReferences(msgs []store.ThreadMessage) []*threadNode {
	byID := make(map[string]*threadNode, len(msgs))
	all := make([]*threadNode, 0, 2*len(msgs))
	slab := make([]threadNode, 0, len(msgs)) // one allocation for most nodes
	newNode := func() *threadNode {
		if len(slab) == cap(slab) {
			slab = make([]threadNode, 0, 1024)
		}
		slab = append(slab, threadNode{seq: -1})
		n := &slab[len(slab)-1]
		all = append(all, n)
		return n
	}
	container := func(id string) *threadNode {
		n := byID[id]
		if n == nil {
			n = newNode()
			byID[id] = n
		}
		return n
	}
	// (1) Link messages and the messages they reference.
	for i := range msgs {
		m := &msgs[i]
		var prev *threadNode
		for refs := m.References; refs != ""; {
			id, rest, _ := strings.Cut(refs, " ")
			refs = rest
			if id == "" {
				continue
			}
			n := container(id)
			if prev != nil && n.parent == nil && n != prev && !isAncestor(n, prev) {
				link(prev, n)
			}
			prev = n
		}
		var self *threadNode
		if m.MessageID != "" {
			if n := container(m.MessageID); n.msg == nil {
				self = n
			}
		}
		if self == nil {
			// No or a duplicate Message-ID: a unique one.
			self = newNode()
		}
		self.msg, self.seq = m, i
		if self.parent != nil {
			unlink(self)
		}
		if prev != nil && prev != self && !isAncestor(self, prev) {
			link(prev, self)
		}
	}
	// (2) The root set: every node without parent.
	var roots []*threadNode
	for _, n := range all {
		if n.parent == nil {
			roots = append(roots, n)
		}
	}
	// (3) Prune dummies.
	roots = prune(roots, true)
	// (4) Sort the root set by date (a dummy by its first child's).
	for _, n := range roots {
		if n.msg == nil {
			slices.SortFunc(n.children, compareDate)
		}
	}
	slices.SortFunc(roots, compareDate)
	// (5) Gather threads of the same base subject.
	roots = gatherSubjects(roots)
	// (6) Sort every set of siblings by date, deepest first.
	sortTree(roots)
	slices.SortFunc(roots, compareDate)
	return roots
}

// isAncestor reports whether a is b or an ancestor of b.
func isAncestor(a, b *threadNode) bool {
	if len(a.children) == 0 {
		return a == b // the common case: no walk up a long thread
	}
	for n := b; n != nil; n = n.parent {
		if n == a {
			return true
		}
	}
	return false
}

func link(parent, child *threadNode) {
	child.parent = parent
	parent.children = append(parent.children, child)
}

func unlink(n *threadNode) {
	p := n.parent
	if i := slices.Index(p.children, n); i >= 0 {
		p.children = slices.Delete(p.children, i, i+1)
	}
	n.parent = nil
}

// prune removes dummies without children and replaces the others by their
// children, except at the top a dummy of several children (step 3).
func prune(list []*threadNode, top bool) []*threadNode {
	out := list[:0:0]
	for _, n := range list {
		n.children = prune(n.children, false)
		if n.msg != nil {
			out = append(out, n)
			continue
		}
		switch {
		case len(n.children) == 0:
		case !top || len(n.children) == 1:
			for _, c := range n.children {
				c.parent = n.parent
			}
			out = append(out, n.children...)
		default:
			out = append(out, n)
		}
	}
	return out
}

// gatherSubjects is step 5: top-level threads of the same base subject
// are merged.
func gatherSubjects(roots []*threadNode) []*threadNode {
	subject := func(n *threadNode) (string, bool) {
		r := n.rep()
		if r.msg == nil {
			return "", false
		}
		return r.msg.Subject, r.msg.Reply
	}
	table := map[string]*threadNode{}
	for _, n := range roots {
		s, reply := subject(n)
		if s == "" {
			continue
		}
		old := table[s]
		if old == nil {
			table[s] = n
		} else if _, oldReply := subject(old); old.msg != nil && (n.msg == nil || oldReply && !reply) {
			table[s] = n
		}
	}
	removed := map[*threadNode]bool{}
	replaced := map[*threadNode]*threadNode{}
	for _, n := range roots {
		s, reply := subject(n)
		if s == "" {
			continue
		}
		t := table[s]
		if t == n {
			continue
		}
		_, tReply := subject(t)
		switch {
		case t.msg == nil && n.msg == nil:
			for _, c := range n.children {
				c.parent = t
			}
			t.children = append(t.children, n.children...)
			n.children = nil
		case t.msg == nil:
			link(t, n)
		case reply && !tReply && n.msg != nil:
			link(t, n)
		default:
			d := &threadNode{seq: -1}
			replaced[t] = d
			link(d, t)
			link(d, n)
			table[s] = d
		}
		removed[n] = true
	}
	out := roots[:0:0]
	for _, n := range roots {
		if removed[n] {
			continue
		}
		for replaced[n] != nil {
			n = replaced[n]
		}
		out = append(out, n)
	}
	return out
}

// sortTree sorts the children of every node by date, the deepest first, so
// that a dummy's first child is known before its siblings are sorted.
func sortTree(list []*threadNode) {
	// Iterative depth-first order: threads may be deep.
	var order []*threadNode
	stack := slices.Clone(list)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		order = append(order, n)
		stack = append(stack, n.children...)
	}
	for i := len(order) - 1; i >= 0; i-- {
		if len(order[i].children) > 1 {
			slices.SortFunc(order[i].children, compareDate)
		}
	}
}

// appendThreads appends the thread list of a THREAD response (after
// "THREAD"): each thread in parentheses, a node followed by its only child
// in the same list or by its children each in parentheses. num gives the
// number a message is reported by.
func appendThreads(b []byte, roots []*threadNode, num func(*store.ThreadMessage) uint32) []byte {
	type frame struct {
		n     *threadNode
		open  bool // n starts a list of its own
		close int  // parentheses to close after n's subtree
	}
	for i, r := range roots {
		if i == 0 {
			b = append(b, ' ') // thread-data = "THREAD" [SP 1*thread-list]
		}
		b = append(b, '(')
		stack := []frame{{r, false, 1}}
		for len(stack) > 0 {
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			n, closing := f.n, f.close
			if f.open {
				b = append(b, '(')
			}
			// A chain of only children stays in one list.
			for {
				if n.msg != nil {
					b = strconv.AppendUint(b, uint64(num(n.msg)), 10)
				}
				if len(n.children) != 1 || n.msg == nil {
					break
				}
				b = append(b, ' ')
				n = n.children[0]
			}
			if len(n.children) == 0 {
				for range closing {
					b = append(b, ')')
				}
				continue
			}
			if n.msg != nil {
				b = append(b, ' ')
			}
			// Children each in parentheses; the last closes the parent's too.
			for i := len(n.children) - 1; i >= 0; i-- {
				c := 1
				if i == len(n.children)-1 {
					c += closing
				}
				stack = append(stack, frame{n.children[i], true, c})
			}
		}
	}
	return b
}
