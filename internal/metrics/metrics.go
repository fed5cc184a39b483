// Package metrics is a small metrics registry written out in the Prometheus
// text exposition format (version 0.0.4).
//
// It is hand-written rather than github.com/prometheus/client_golang because
// mailstack needs a dozen counters and gauges, one histogram and no push,
// and the client library would bring in about ten modules (protobuf among
// them) for that. Everything here is safe for concurrent use.
package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metric families in registration order.
type Registry struct {
	mu       sync.Mutex
	families []family
}

type family interface {
	write(ctx context.Context, w *bufio.Writer) error
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

func (r *Registry) add(f family) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.families = append(r.families, f)
}

// WriteText writes every metric in the text exposition format. Functions
// registered with NewGaugeFunc run now, with ctx.
func (r *Registry) WriteText(ctx context.Context, w io.Writer) error {
	r.mu.Lock()
	fs := append([]family(nil), r.families...)
	r.mu.Unlock()
	bw := bufio.NewWriter(w)
	for _, f := range fs {
		if err := f.write(ctx, bw); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// ContentType is the HTTP content type of WriteText's output.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

func header(w *bufio.Writer, name, help, typ string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func labelString(names, values []string, extra ...string) string {
	if len(names) == 0 && len(extra) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%s="%s"`, n, escapeLabel(values[i]))
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%s="%s"`, extra[i], escapeLabel(extra[i+1]))
	}
	b.WriteByte('}')
	return b.String()
}

// value is a float64 updated atomically.
type value struct{ bits atomic.Uint64 }

func (v *value) add(d float64) {
	for {
		old := v.bits.Load()
		if v.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}
func (v *value) set(f float64) { v.bits.Store(math.Float64bits(f)) }
func (v *value) get() float64  { return math.Float64frombits(v.bits.Load()) }

// vec is a set of children keyed by label values.
type vec[T any] struct {
	name, help, typ string
	labels          []string
	newChild        func() *T
	mu              sync.Mutex
	children        map[string]*T
	values          map[string][]string
}

func newVec[T any](name, help, typ string, labels []string, newChild func() *T) *vec[T] {
	return &vec[T]{name: name, help: help, typ: typ, labels: labels, newChild: newChild,
		children: map[string]*T{}, values: map[string][]string{}}
}

func (v *vec[T]) with(values []string) *T {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %s takes %d label values, got %d", v.name, len(v.labels), len(values)))
	}
	key := strings.Join(values, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.children[key]
	if !ok {
		c = v.newChild()
		v.children[key] = c
		v.values[key] = append([]string(nil), values...)
	}
	return c
}

// sorted returns children in a stable order, so output is diffable.
func (v *vec[T]) sorted() (keys []string, children []*T, values [][]string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k := range v.children {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		children = append(children, v.children[k])
		values = append(values, v.values[k])
	}
	return keys, children, values
}

// Counter is a value that only goes up.
type Counter struct{ v value }

// Inc adds one.
func (c *Counter) Inc() { c.v.add(1) }

// Add adds d, which must not be negative.
func (c *Counter) Add(d float64) {
	if d < 0 {
		panic("metrics: counter decreased")
	}
	c.v.add(d)
}

// Value returns the current value.
func (c *Counter) Value() float64 { return c.v.get() }

// CounterVec is a counter with labels.
type CounterVec struct{ v *vec[Counter] }

// NewCounterVec registers a counter family. A family without labels has
// one child, With().
func (r *Registry) NewCounterVec(name, help string, labels ...string) *CounterVec {
	c := &CounterVec{newVec(name, help, "counter", labels, func() *Counter { return new(Counter) })}
	r.add(c)
	return c
}

// With returns the counter for the label values (created at zero).
func (c *CounterVec) With(values ...string) *Counter { return c.v.with(values) }

func (c *CounterVec) write(_ context.Context, w *bufio.Writer) error {
	header(w, c.v.name, c.v.help, c.v.typ)
	_, cs, vals := c.v.sorted()
	for i, ch := range cs {
		fmt.Fprintf(w, "%s%s %s\n", c.v.name, labelString(c.v.labels, vals[i]), formatFloat(ch.Value()))
	}
	return nil
}

// Gauge is a value that goes up and down.
type Gauge struct{ v value }

// Set sets the value.
func (g *Gauge) Set(f float64) { g.v.set(f) }

// Add adds d (which may be negative).
func (g *Gauge) Add(d float64) { g.v.add(d) }

// Inc adds one.
func (g *Gauge) Inc() { g.v.add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.v.add(-1) }

// Value returns the current value.
func (g *Gauge) Value() float64 { return g.v.get() }

// GaugeVec is a gauge with labels.
type GaugeVec struct{ v *vec[Gauge] }

// NewGaugeVec registers a gauge family.
func (r *Registry) NewGaugeVec(name, help string, labels ...string) *GaugeVec {
	g := &GaugeVec{newVec(name, help, "gauge", labels, func() *Gauge { return new(Gauge) })}
	r.add(g)
	return g
}

// With returns the gauge for the label values (created at zero).
func (g *GaugeVec) With(values ...string) *Gauge { return g.v.with(values) }

func (g *GaugeVec) write(_ context.Context, w *bufio.Writer) error {
	header(w, g.v.name, g.v.help, g.v.typ)
	_, gs, vals := g.v.sorted()
	for i, ch := range gs {
		fmt.Fprintf(w, "%s%s %s\n", g.v.name, labelString(g.v.labels, vals[i]), formatFloat(ch.Value()))
	}
	return nil
}

type gaugeFunc struct {
	name, help string
	fn         func(ctx context.Context) (float64, error)
}

// NewGaugeFunc registers a gauge whose value fn computes at each scrape
// (for values that live in the database, such as the queue depth). When fn
// fails the sample is left out, so a scrape shows a gap rather than a lie.
func (r *Registry) NewGaugeFunc(name, help string, fn func(ctx context.Context) (float64, error)) {
	r.add(&gaugeFunc{name, help, fn})
}

func (g *gaugeFunc) write(ctx context.Context, w *bufio.Writer) error {
	header(w, g.name, g.help, "gauge")
	v, err := g.fn(ctx)
	if err != nil {
		fmt.Fprintf(w, "# %s unavailable: %s\n", g.name, strings.ReplaceAll(err.Error(), "\n", " "))
		return nil
	}
	fmt.Fprintf(w, "%s %s\n", g.name, formatFloat(v))
	return nil
}

// Histogram counts observations into cumulative buckets.
type Histogram struct {
	bounds []float64
	counts []atomic.Uint64 // one per bound, plus +Inf
	sum    value
}

// NewHistogram registers a histogram without labels. bounds are the
// buckets' upper bounds in increasing order.
func (r *Registry) NewHistogram(name, help string, bounds ...float64) *Histogram {
	h := &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
	r.add(&histogramFamily{name, help, h})
	return h
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v)
	h.counts[i].Add(1)
	h.sum.add(v)
}

type histogramFamily struct {
	name, help string
	h          *Histogram
}

func (f *histogramFamily) write(_ context.Context, w *bufio.Writer) error {
	header(w, f.name, f.help, "histogram")
	var cum uint64
	for i, b := range f.h.bounds {
		cum += f.h.counts[i].Load()
		fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", f.name, formatFloat(b), cum)
	}
	cum += f.h.counts[len(f.h.bounds)].Load()
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n", f.name, cum)
	fmt.Fprintf(w, "%s_sum %s\n", f.name, formatFloat(f.h.sum.get()))
	fmt.Fprintf(w, "%s_count %d\n", f.name, cum)
	return nil
}
