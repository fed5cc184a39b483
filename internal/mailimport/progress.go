package mailimport

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress shows an import's progress: on a terminal one bar in bytes
// (rate and ETA) described by the folder under way and the message count;
// otherwise a plain line every few seconds and one per finished folder.
// A nil *Progress reports nothing.
type Progress struct {
	w        io.Writer
	bar      *progressbar.ProgressBar // nil: plain lines
	interval time.Duration

	mu                sync.Mutex
	start             time.Time
	lastLine          time.Time
	folder            string
	msgs, total       int64 // messages done, known to do
	bytes, bytesTotal int64
}

// NewProgress reports to w, with a bar if terminal is true.
func NewProgress(w io.Writer, terminal bool) *Progress {
	p := &Progress{w: w, start: time.Now(), interval: 5 * time.Second}
	if terminal {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionShowDescriptionAtLineEnd(),
		)
	}
	return p
}

// addTotal announces messages and bytes to come.
func (p *Progress) addTotal(msgs, bytes int64) {
	if p == nil || msgs == 0 && bytes == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total += msgs
	p.bytesTotal += bytes
	if p.bar != nil {
		p.bar.ChangeMax64(p.bytesTotal)
	}
}

// add records messages done (stored, skipped or failed) of folder.
func (p *Progress) add(folder string, msgs, bytes int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs += msgs
	p.bytes += bytes
	p.folder = folder
	if p.total < p.msgs { // a source that cannot say in advance
		p.total = p.msgs
	}
	if p.bar != nil {
		if p.bytesTotal < p.bytes {
			p.bytesTotal = p.bytes
			p.bar.ChangeMax64(p.bytesTotal)
		}
		p.bar.Describe(fmt.Sprintf("%s · %d/%d messages", folder, p.msgs, p.total))
		p.bar.Set64(p.bytes) //nolint:errcheck // a display
		return
	}
	if time.Since(p.lastLine) >= p.interval {
		p.lastLine = time.Now()
		p.line()
	}
}

// folderDone reports a finished source folder.
func (p *Progress) folderDone(folder string, msgs int64) {
	if p == nil || p.bar != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s: done, %d messages\n", folder, msgs)
}

// line prints the plain progress line; p.mu is held.
func (p *Progress) line() {
	secs := time.Since(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(p.msgs) / secs
	}
	eta := ""
	if rate > 0 && p.total > p.msgs {
		eta = fmt.Sprintf(", about %s left", (time.Duration(float64(p.total-p.msgs)/rate) * time.Second).Round(time.Second))
	}
	fmt.Fprintf(p.w, "%s: %d/%d messages, %.1f MiB, %.0f messages/s%s\n",
		p.folder, p.msgs, p.total, float64(p.bytes)/(1<<20), rate, eta)
}

// Finish ends the bar (or prints the last plain line).
func (p *Progress) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish() //nolint:errcheck // a display
		fmt.Fprintln(p.w)
		return
	}
	if p.msgs > 0 {
		p.line()
	}
}
