package imapd

import (
	"bufio"
	"errors"
	"io"
	"math/bits"
	"sync"
)

// inflater decompresses a raw DEFLATE stream (RFC 1951) that arrives in
// pieces, as COMPRESS=DEFLATE commands do: each is ended by a flush and
// the client then waits for the answer. Its one rule is that it never
// waits for input while it holds output the reader has not had: before a
// read that may block (a block header, or a symbol whose bits have not
// all arrived) it hands over what it decoded. So whatever flush the
// client used (zlib's Z_SYNC_FLUSH, Z_PARTIAL_FLUSH, Z_FULL_FLUSH), every
// byte of a command reaches the decoder as soon as its bits have.
//
// Neither Go's compress/flate nor klauspost's flate does that (see
// compress.go and TestInflateHandsOverEveryBlock): the first hands over a
// Huffman block's output only at an empty stored block, the second reads
// ten bits past a block's end, which a partial flush may not have sent.
//
// It reads whole bytes from a bufio.Reader, taking in only what is
// buffered already unless a symbol needs more. Memory: the window (32 KiB
// of history and 8 KiB of output) and three code tables, about 46 KB.
type inflater struct {
	br    *bufio.Reader
	b     uint64 // bits read but not used, lowest first
	nb    uint   // how many
	win   []byte
	wpos  int // end of the output in win
	rpos  int // start of the output not yet handed over
	state int
	final bool // the current block is the stream's last
	left  int  // bytes of the current stored block still to copy
	lit   *huffman
	dist  *huffman
	err   error
	// noWait makes bits fail rather than wait for input.
	noWait bool
	// The dynamic block's tables.
	dynLit, dynDist, codeLen huffman
}

const (
	inflateHistory = 32 << 10 // the farthest a match reaches back
	inflateWindow  = inflateHistory + 8<<10
	maxMatch       = 258
	// symbolBits is the most bits one length-distance pair takes:
	// codes of 15 bits, 5 and 13 extra bits.
	symbolBits = 15 + 5 + 15 + 13
)

// Inflater states.
const (
	atHeader = iota
	inStored
	inHuffman
	atEnd
)

// errCorrupt is input that is not DEFLATE.
var errCorrupt = errors.New("invalid DEFLATE data")

func newInflater(br *bufio.Reader) *inflater {
	return &inflater{br: br, win: make([]byte, inflateWindow)}
}

// Read hands over decoded bytes, decoding more only when none is left.
func (z *inflater) Read(p []byte) (int, error) {
	for {
		if z.rpos < z.wpos {
			n := copy(p, z.win[z.rpos:z.wpos])
			z.rpos += n
			return n, nil
		}
		if z.err != nil {
			return 0, z.err
		}
		z.err = z.step()
	}
}

// step decodes until there is output to hand over (at the latest at the
// end of a block) or an error. It starts with none pending.
func (z *inflater) step() error {
	if z.wpos > len(z.win)-maxMatch {
		// Keep the last 32 KiB as history; all before was handed over.
		z.wpos = copy(z.win, z.win[z.wpos-inflateHistory:z.wpos])
		z.rpos = z.wpos
	}
	switch z.state {
	case atHeader:
		return z.header()
	case inStored:
		return z.stored()
	case inHuffman:
		return z.huffmanBlock()
	}
	return io.EOF
}

// fill takes in the bytes already buffered, without waiting, up to 64
// bits.
func (z *inflater) fill() {
	for z.nb <= 56 && z.br.Buffered() > 0 {
		c, _ := z.br.ReadByte()
		z.b |= uint64(c) << z.nb
		z.nb += 8
	}
}

// bits returns the next n bits (n ≤ 32), waiting for input if need be
// (unless noWait).
func (z *inflater) bits(n uint) (uint32, error) {
	for z.nb < n {
		if z.noWait {
			return 0, errWouldWait
		}
		c, err := z.br.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		z.b |= uint64(c) << z.nb
		z.nb += 8
	}
	v := uint32(z.b & (1<<n - 1))
	z.b >>= n
	z.nb -= n
	return v, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// header reads a block header (and a dynamic block's code tables).
func (z *inflater) header() error {
	if z.final {
		z.state = atEnd
		return io.EOF
	}
	h, err := z.bits(3)
	if err != nil {
		return err
	}
	z.final = h&1 == 1
	switch h >> 1 {
	case 0:
		// Stored: to the byte boundary, then LEN and its complement.
		z.b >>= z.nb % 8
		z.nb -= z.nb % 8
		v, err := z.bits(32)
		if err != nil {
			return err
		}
		if uint16(v) != ^uint16(v>>16) {
			return errCorrupt
		}
		z.left, z.state = int(uint16(v)), inStored
	case 1:
		t := fixedTables()
		z.lit, z.dist, z.state = &t[0], &t[1], inHuffman
	case 2:
		if err := z.dynamicTables(); err != nil {
			return err
		}
		z.lit, z.dist, z.state = &z.dynLit, &z.dynDist, inHuffman
	default:
		return errCorrupt
	}
	return nil
}

// stored copies a stored block's bytes as they arrive.
func (z *inflater) stored() error {
	for z.left > 0 {
		room := len(z.win) - z.wpos
		if room == 0 {
			return nil
		}
		if z.nb >= 8 {
			z.win[z.wpos] = byte(z.b)
			z.b >>= 8
			z.nb -= 8
			z.wpos++
			z.left--
			continue
		}
		n := min(z.left, room, z.br.Buffered())
		if n == 0 {
			if z.rpos < z.wpos {
				return nil
			}
			if _, err := z.br.Peek(1); err != nil {
				return noEOF(err)
			}
			continue
		}
		n, _ = z.br.Read(z.win[z.wpos : z.wpos+n])
		z.wpos += n
		z.left -= n
	}
	z.state = atHeader
	return nil
}

// Lengths and distances (RFC 1951 §3.2.5): base values and extra bits of
// codes 257–285 and 0–29.
var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// huffmanBlock decodes symbols until the block ends, the window is full,
// or the next symbol needs input that has not arrived while there is
// output to hand over.
func (z *inflater) huffmanBlock() error {
	for {
		if z.wpos > len(z.win)-maxMatch {
			return nil
		}
		if z.nb < symbolBits {
			z.fill()
		}
		// With output pending, decode only from the bits at hand: a
		// symbol that needs more is left for after the hand-over.
		z.noWait = z.nb < symbolBits && z.rpos < z.wpos
		b, nb := z.b, z.nb
		end, err := z.symbol()
		z.noWait = false
		switch {
		case err == errWouldWait:
			z.b, z.nb = b, nb
			return nil
		case err != nil:
			return err
		case end:
			z.state = atHeader
			return nil
		}
	}
}

// errWouldWait says that a symbol needs bits that have not arrived, when
// noWait is set.
var errWouldWait = errors.New("inflate: input needed")

// symbol decodes one literal, length-distance pair or end of block, and
// writes its output only once all its bits are read.
func (z *inflater) symbol() (end bool, err error) {
	sym, err := z.decode(z.lit)
	if err != nil {
		return false, err
	}
	switch {
	case sym < 256:
		z.win[z.wpos] = byte(sym)
		z.wpos++
		return false, nil
	case sym == 256:
		return true, nil
	case sym > 285:
		return false, errCorrupt
	}
	sym -= 257
	extra, err := z.bits(uint(lengthExtra[sym]))
	if err != nil {
		return false, err
	}
	length := int(lengthBase[sym]) + int(extra)
	dsym, err := z.decode(z.dist)
	if err != nil {
		return false, err
	}
	if dsym > 29 {
		return false, errCorrupt
	}
	if extra, err = z.bits(uint(distExtra[dsym])); err != nil {
		return false, err
	}
	dist := int(distBase[dsym]) + int(extra)
	if dist > z.wpos {
		return false, errCorrupt // before the start of the stream
	}
	// Overlapping copies repeat the last dist bytes, as they must.
	src := z.wpos - dist
	if dist >= length {
		copy(z.win[z.wpos:z.wpos+length], z.win[src:src+length])
	} else {
		for i := range length {
			z.win[z.wpos+i] = z.win[src+i]
		}
	}
	z.wpos += length
	return false, nil
}

// huffman is a canonical code (RFC 1951 §3.2.2): the number of codes of
// each length and the symbols in code order, for a bit-by-bit decode,
// and a table of the codes of up to fastBits bits for the common case.
type huffman struct {
	count  [16]uint16
	symbol [288]uint16
	fast   [1 << fastBits]uint16 // symbol<<4 | length; 0: not in the table
}

const fastBits = 9

// init builds the code from each symbol's code length. An over-subscribed
// set is corrupt; an incomplete one is accepted (an unused code fails
// when met), as a lone distance code needs.
func (h *huffman) init(lengths []uint8) error {
	h.count = [16]uint16{}
	for _, l := range lengths {
		h.count[l]++
	}
	h.count[0] = 0
	left := 1
	for l := 1; l <= 15; l++ {
		left = left<<1 - int(h.count[l])
		if left < 0 {
			return errCorrupt
		}
	}
	var offs, next [16]uint16
	code := uint16(0)
	for l := 1; l <= 15; l++ {
		if l < 15 {
			offs[l+1] = offs[l] + h.count[l]
		}
		code = (code + h.count[l-1]) << 1
		next[l] = code
	}
	clear(h.fast[:])
	for sym, l := range lengths {
		if l == 0 {
			continue
		}
		h.symbol[offs[l]] = uint16(sym)
		offs[l]++
		c := next[l]
		next[l]++
		if l <= fastBits {
			// The stream holds a code's bits from its first: reversed.
			r := bits.Reverse16(c) >> (16 - l)
			for j := int(r); j < len(h.fast); j += 1 << l {
				h.fast[j] = uint16(sym)<<4 | uint16(l)
			}
		}
	}
	return nil
}

// decode reads one symbol of h. It waits for input only for bits the
// symbol needs.
func (z *inflater) decode(h *huffman) (int, error) {
	if e := h.fast[z.b&(1<<fastBits-1)]; e != 0 && uint(e&15) <= z.nb {
		z.b >>= e & 15
		z.nb -= uint(e & 15)
		return int(e >> 4), nil
	}
	// Bit by bit (puff's way): codes of a length are consecutive,
	// starting at first.
	code, first, index := 0, 0, 0
	for l := 1; l <= 15; l++ {
		bit, err := z.bits(1)
		if err != nil {
			return 0, err
		}
		code |= int(bit)
		n := int(h.count[l])
		if code-first < n {
			return int(h.symbol[index+code-first]), nil
		}
		index += n
		first = (first + n) << 1
		code <<= 1
	}
	return 0, errCorrupt
}

// codeLengthOrder is the order of the code length code's lengths.
var codeLengthOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

// dynamicTables reads a dynamic block's code tables (RFC 1951 §3.2.7).
func (z *inflater) dynamicTables() error {
	v, err := z.bits(14)
	if err != nil {
		return err
	}
	nlit, ndist, nclen := int(v&31)+257, int(v>>5&31)+1, int(v>>10)+4
	if nlit > 286 || ndist > 30 {
		return errCorrupt
	}
	var cl [19]uint8
	for i := range nclen {
		l, err := z.bits(3)
		if err != nil {
			return err
		}
		cl[codeLengthOrder[i]] = uint8(l)
	}
	if err := z.codeLen.init(cl[:]); err != nil {
		return err
	}
	var lengths [286 + 30]uint8
	for i := 0; i < nlit+ndist; {
		sym, err := z.decode(&z.codeLen)
		if err != nil {
			return err
		}
		if sym < 16 {
			lengths[i] = uint8(sym)
			i++
			continue
		}
		var val uint8
		var rep uint32
		switch sym {
		case 16:
			if i == 0 {
				return errCorrupt
			}
			val = lengths[i-1]
			rep, err = z.bits(2)
			rep += 3
		case 17:
			rep, err = z.bits(3)
			rep += 3
		default:
			rep, err = z.bits(7)
			rep += 11
		}
		if err != nil {
			return err
		}
		if i+int(rep) > nlit+ndist {
			return errCorrupt
		}
		for range rep {
			lengths[i] = val
			i++
		}
	}
	if lengths[256] == 0 {
		return errCorrupt // no end-of-block code
	}
	if err := z.dynLit.init(lengths[:nlit]); err != nil {
		return err
	}
	return z.dynDist.init(lengths[nlit : nlit+ndist])
}

// fixedTables are the codes of fixed-Huffman blocks (RFC 1951 §3.2.6),
// built once and only read.
var fixedTables = sync.OnceValue(func() *[2]huffman {
	var t [2]huffman
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	t[0].init(l[:]) //nolint:errcheck // a complete code
	var d [30]uint8
	for i := range d {
		d[i] = 5
	}
	t[1].init(d[:]) //nolint:errcheck // an incomplete code, accepted
	return &t
})
