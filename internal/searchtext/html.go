package searchtext

import (
	"bytes"
	"html"
	"io"
)

// htmlText reduces an HTML stream to its text as it is written: tags,
// comments and the content of script and style elements are dropped,
// character references decoded, a no-break space read as a space, and a
// line feed written for tags that end a line or a cell, so that words on
// either side stay apart. Walk reads HTML parts through it, so searching
// for "div" does not find every HTML message. It keeps its state between
// writes (a tag or reference may span any two writes) and needs Close to
// write a reference left unfinished.
type htmlText struct {
	w     io.Writer
	state int
	tag   []byte // name of the tag being read, lower-cased
	end   bool   // the tag is an end tag
	quote byte   // quote open inside a tag
	skip  string // the element whose content is skipped ("script", "style")
	ref   []byte // a character reference being read, from '&'
	out   []byte
}

const (
	htmlData      = iota
	htmlLT        // after '<'
	htmlTagName   // reading the tag name
	htmlTag       // inside a tag after its name
	htmlComment   // inside <!-- -->
	htmlDecl      // inside <! or <? up to '>'
	htmlReference // reading &…;
)

// htmlRefMax bounds a character reference; longer runs are text.
const htmlRefMax = 32

func newHTMLText(w io.Writer) *htmlText { return &htmlText{w: w} }

func (h *htmlText) Write(p []byte) (int, error) {
	h.out = h.out[:0]
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch h.state {
		case htmlData:
			switch c {
			case '<':
				h.state = htmlLT
			case '&':
				if h.skip == "" {
					h.ref = append(h.ref[:0], c)
					h.state = htmlReference
				}
			default:
				if h.skip == "" {
					h.out = append(h.out, c)
				}
			}
		case htmlLT:
			switch {
			case c == '/':
				h.tag, h.end, h.state = h.tag[:0], true, htmlTagName
			case c == '!':
				h.tag, h.state = h.tag[:0], htmlDecl
			case c == '?':
				h.state = htmlDecl
			case isASCIILetter(c):
				h.tag, h.end, h.state = append(h.tag[:0], lowerASCII(c)), false, htmlTagName
			default: // not a tag: a literal '<'
				h.state = htmlData
				if h.skip == "" {
					h.out = append(h.out, '<')
				}
				i--
			}
		case htmlTagName:
			if isASCIILetter(c) || '0' <= c && c <= '9' {
				h.tag = append(h.tag, lowerASCII(c))
				continue
			}
			h.state = htmlTag
			i--
		case htmlTag:
			switch {
			case h.quote != 0:
				if c == h.quote {
					h.quote = 0
				}
			case c == '"' || c == '\'':
				h.quote = c
			case c == '>':
				h.state = htmlData
				h.tagDone()
			}
		case htmlDecl:
			h.tag = append(h.tag, c)
			if len(h.tag) == 2 && string(h.tag) == "--" {
				h.state = htmlComment
				h.tag = h.tag[:0]
			} else if c == '>' {
				h.state = htmlData
			}
		case htmlComment:
			h.tag = append(h.tag, c)
			if len(h.tag) > 3 {
				h.tag = h.tag[len(h.tag)-3:]
			}
			if string(h.tag) == "-->" {
				h.state = htmlData
			}
		case htmlReference:
			if c == ';' || len(h.ref) >= htmlRefMax || !(isASCIILetter(c) || '0' <= c && c <= '9' || c == '#') {
				if c == ';' {
					h.ref = append(h.ref, c)
				} else {
					i-- // the reference ends before c
				}
				h.flushRef()
				h.state = htmlData
				continue
			}
			h.ref = append(h.ref, c)
		}
	}
	if len(h.out) > 0 {
		if _, err := h.w.Write(h.out); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// Close writes a character reference the stream ended in.
func (h *htmlText) Close() error {
	h.out = h.out[:0]
	if h.state == htmlReference {
		h.flushRef()
	}
	h.state = htmlData
	if len(h.out) == 0 {
		return nil
	}
	_, err := h.w.Write(h.out)
	return err
}

func (h *htmlText) flushRef() {
	s := html.UnescapeString(string(h.ref))
	h.out = append(h.out, bytes.ReplaceAll([]byte(s), []byte("\u00a0"), []byte(" "))...)
	h.ref = h.ref[:0]
}

// tagDone acts on a tag just read.
func (h *htmlText) tagDone() {
	name := string(h.tag)
	if h.skip != "" {
		if h.end && name == h.skip {
			h.skip = ""
		}
		return
	}
	switch name {
	case "script", "style":
		if !h.end {
			h.skip = name
		}
	case "br", "p", "div", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6",
		"table", "ul", "ol", "dl", "dt", "dd", "blockquote", "pre", "hr", "title", "section", "article":
		h.out = append(h.out, '\n')
	}
}

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
