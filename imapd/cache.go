package imapd

import (
	"container/list"
	"context"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/mailstack/mailstack/internal/mimeindex"
	"github.com/mailstack/mailstack/store"
)

// Two caches let FETCH answer without the database when the process
// knows the answer already (ARCHITECTURE.md, "FETCH without a round
// trip"):
//
//   - contents: what never changes once a message is stored (its
//     structure, top-level header, size; the whole message when small),
//     by content id, shared by every session of the process, least
//     recently used first out past a byte budget;
//   - rows: per selected mailbox (watched), the mutable row of each
//     message read recently (content id, flags, modseq, date, size).
//     Rows change only through the feed, which applies every change to
//     the cache as it applies it to the views (under watched.mu, in
//     commit order), so the cache is as current as the views are. A row
//     read from the database is added only if no change was applied while
//     it was read (a generation check): the read might be older than it.

// rowCacheMax caps a mailbox's cached rows: a FETCH 1:* of a huge mailbox
// fills it and the rest is read as before. processRowMax caps the rows
// of all mailboxes of the process (about 250 bytes each: ~50 MB), so that
// thousands of sessions on large mailboxes cannot grow memory past it.
const (
	rowCacheMax   = 10000
	processRowMax = 200_000
)

// rowCache is a watched mailbox's cache of message rows.
type rowCache struct {
	mu    sync.RWMutex
	gen   uint64 // bumped by every change applied
	rows  map[uint32]*store.MessageMeta
	total *atomic.Int64 // rows cached by the whole process (feed.rowsCached)
	limit int64         // of total: processRowMax
}

// get returns the cached rows of refs (ascending), or nil if any is
// missing, and the generation they were read at.
func (c *rowCache) get(refs []msgRef) ([]store.MessageMeta, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]store.MessageMeta, len(refs))
	for i, ref := range refs {
		r := c.rows[ref.uid]
		if r == nil {
			return nil, c.gen
		}
		out[i] = *r
	}
	return out, c.gen
}

// generation returns the cache's generation (before a read).
func (c *rowCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// put adds rows read from the database at a time the cache was at gen;
// nothing is added if a change was applied since.
func (c *rowCache) put(gen uint64, rows []store.MessageMeta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.rows == nil {
		c.rows = map[uint32]*store.MessageMeta{}
	}
	for i := range rows {
		if len(c.rows) >= rowCacheMax {
			return
		}
		r := rows[i]
		if c.rows[r.UID] == nil && !c.count(1) {
			return
		}
		r.Structure, r.Header, r.Body = nil, nil, nil
		c.rows[r.UID] = &r
	}
}

// dropAll empties the cache, giving its rows back to the process's count
// (c.mu held).
func (c *rowCache) dropAll() {
	c.count(-len(c.rows))
	c.rows = nil
}

// count adds n rows to the process's count, unless that would pass
// processRowMax.
func (c *rowCache) count(n int) bool {
	if c.total == nil { // a cache of its own (tests)
		return true
	}
	if c.total.Add(int64(n)) > c.limit && n > 0 {
		c.total.Add(-int64(n))
		return false
	}
	return true
}

// apply brings the cache up to a change (watched.mu held): new flags for
// cached rows, expunged ones out; a change too large to list drops all.
func (c *rowCache) apply(ch *store.Changes) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if ch.Truncated {
		c.dropAll()
		return
	}
	for _, m := range ch.Updated {
		if r := c.rows[m.UID]; r != nil {
			// A copy: readers hold the old row.
			nr := *r
			nr.Flags, nr.ModSeq = m.Flags, m.ModSeq
			c.rows[m.UID] = &nr
		}
	}
	for _, u := range ch.Expunged {
		if c.rows[u] != nil {
			delete(c.rows, u)
			c.count(-1)
		}
	}
}

// clear empties the cache (the mailbox went away).
func (c *rowCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.dropAll()
}

// contentCacheMax is the byte budget of the contents cache.
const contentCacheMax = 64 << 20

// content is what never changes of a stored message.
type content struct {
	id         int64
	structure  *mimeindex.Message
	header     []byte
	headerSize int64
	body       []byte // the whole message, if small and read
	cost       int64
}

// contentCache is a least-recently-used cache of message contents.
type contentCache struct {
	mu   sync.Mutex
	max  int64
	size int64
	ll   *list.List // of *content, most recent first
	m    map[int64]*list.Element
}

func newContentCache(max int64) *contentCache {
	return &contentCache{max: max, ll: list.New(), m: map[int64]*list.Element{}}
}

// get returns the cached content of id, if any.
func (c *contentCache) get(id int64) *content {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[id]
	if e == nil {
		return nil
	}
	c.ll.MoveToFront(e)
	return e.Value.(*content)
}

// put caches what a read brought of a message's content, adding to what
// is cached already.
func (c *contentCache) put(m *store.MessageMeta) {
	if m.Structure == nil && m.Header == nil && m.Body == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var ct content
	if e := c.m[m.MessageID]; e != nil {
		ct = *e.Value.(*content)
		c.size -= ct.cost
		c.ll.Remove(e)
		delete(c.m, m.MessageID)
	}
	ct.id = m.MessageID
	if m.Structure != nil {
		ct.structure = m.Structure
	}
	if m.Header != nil {
		ct.header, ct.headerSize = m.Header, m.HeaderSize
	}
	if m.Body != nil {
		ct.body = m.Body
	}
	ct.cost = int64(len(ct.header)+len(ct.body)) + 256
	if ct.structure != nil && ct.structure.Root != nil {
		ct.cost += 512 * int64(countParts(ct.structure.Root))
	}
	if ct.cost > c.max/8 {
		return // too large to be worth keeping
	}
	c.m[ct.id] = c.ll.PushFront(&ct)
	c.size += ct.cost
	for c.size > c.max {
		e := c.ll.Back()
		old := e.Value.(*content)
		c.ll.Remove(e)
		delete(c.m, old.id)
		c.size -= old.cost
	}
}

// putSpooled caches what FETCH needs of a message just stored from its
// spool: its structure, header and, when small, the whole message.
func (c *contentCache) putSpooled(id int64, msg *store.Spooled) {
	if msg.Structure == nil || msg.Structure.Root == nil {
		return
	}
	m := store.MessageMeta{MessageID: id, Size: msg.Size, Structure: msg.Structure, HeaderSize: msg.Structure.Root.BodyStart}
	n := min(m.HeaderSize, store.MaxStoredHeader)
	if msg.Size <= store.InlineBodySize {
		n = msg.Size
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(io.NewSectionReader(msg.ReaderAt(), 0, n), buf); err != nil {
		return
	}
	m.Header = buf[:min(m.HeaderSize, n)]
	if msg.Size <= store.InlineBodySize {
		m.Body = buf
	}
	c.put(&m)
}

func countParts(p *mimeindex.Part) int {
	n := 1
	for _, c := range p.Children {
		n += countParts(c)
	}
	return n
}

// has reports whether ct (nil: nothing cached) holds what fo asks for of
// a message of that size (a large one's body is read by chunk anyway).
func (ct *content) has(fo store.FetchOptions, size int64) bool {
	body := fo.Body && size <= store.InlineBodySize
	if ct == nil {
		return !fo.Structure && !fo.Header && !body
	}
	return (!fo.Structure || ct.structure != nil) && (!fo.Header || ct.header != nil) && (!body || ct.body != nil)
}

// fill completes a row with cached content.
func (ct *content) fill(m *store.MessageMeta) {
	if ct != nil {
		m.Structure, m.Header, m.HeaderSize, m.Body = ct.structure, ct.header, ct.headerSize, ct.body
	}
}

// fetchMeta reads the metadata of the view's messages refs (ascending),
// from the caches where they have it, else from the database (one query,
// which also fills the caches). Messages gone from the database are left
// out.
func (s *session) fetchMeta(ctx context.Context, sel *view, refs []msgRef, fo store.FetchOptions) ([]store.MessageMeta, error) {
	rc, cc := &sel.w.rows, s.srv.contents
	rows, gen := rc.get(refs)
	if rows != nil {
		missing := false
		for i := range rows {
			if fo == (store.FetchOptions{}) {
				break
			}
			ct := cc.get(rows[i].MessageID)
			if !ct.has(fo, rows[i].Size) {
				missing = true
				break
			}
			ct.fill(&rows[i])
		}
		if !missing {
			return rows, nil
		}
	}
	out := make([]store.MessageMeta, 0, len(refs))
	err := s.srv.st.FetchMeta(ctx, s.accountID(), s.mailbox.ID, refRanges(refs), fo, func(m *store.MessageMeta) error {
		out = append(out, *m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	rc.put(gen, out)
	for i := range out {
		cc.put(&out[i])
	}
	return slices.Clip(out), nil
}
