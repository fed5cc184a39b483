package searchtext

import (
	"io"
	"strings"

	"github.com/emersion/go-message/charset"

	"github.com/mailstack/mailstack/internal/mimeindex"
)

// Walk writes the searchable text of every leaf part under p to sink, one
// part after another: an attachment's name (filename or name parameter,
// for any part that has one), and the body of text/* parts, transfer
// encoding and charset decoded, HTML reduced to text. The message is size
// bytes long; open returns a reader of its bytes [start,end). Only an
// error of a reader open returned is returned: a part that does not decode
// is searched as far as it decodes.
func Walk(p *mimeindex.Part, size int64, open func(start, end int64) io.Reader, sink Sink) error {
	if sink.Done() {
		return nil
	}
	if len(p.Children) > 0 {
		for _, c := range p.Children {
			if err := Walk(c, size, open, sink); err != nil {
				return err
			}
		}
		return nil
	}
	if name := partName(p); name != "" {
		sink.StartPart()
		_, _ = io.WriteString(sink, name)
		sink.EndPart()
	}
	if p.Type != "text" {
		return nil
	}
	start, end := min(max(p.BodyStart, 0), size), min(max(p.End, 0), size)
	if start >= end {
		return nil
	}
	src := &trackReader{r: open(start, end)}
	var text io.Reader = mimeindex.NewDecoder(p.Encoding, src)
	switch cs := strings.ToLower(p.Params["charset"]); cs {
	case "", "utf-8", "utf8", "us-ascii":
	default:
		if cr, err := charset.Reader(cs, text); err == nil {
			text = cr
		}
	}
	sink.StartPart()
	var w io.Writer = sink
	var h *htmlText
	if p.Subtype == "html" {
		h = newHTMLText(sink)
		w = h
	}
	_, err := io.CopyBuffer(w, text, make([]byte, 32<<10))
	if src.err != nil {
		return src.err // the message could not be read
	}
	// Any other error is ErrDone or a charset decoder failing on
	// malformed input: what was decoded so far has been searched, the
	// rest is skipped.
	if h != nil && err == nil {
		_ = h.Close()
	}
	sink.EndPart()
	return nil
}

// trackReader remembers a read error of the message's reader, to tell it
// apart from decoding errors.
type trackReader struct {
	r   io.Reader
	err error
}

func (t *trackReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// partName returns the file name a part gives itself, decoded.
func partName(p *mimeindex.Part) string {
	name := p.DispositionParams["filename"]
	if name == "" {
		name = p.Params["name"]
	}
	if strings.Contains(name, "=?") {
		name = mimeindex.DecodeWords(name) // RFC 2047 in a parameter, as some clients write it
	}
	return name
}
