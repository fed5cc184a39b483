package mailimport

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mailstack/mailstack/internal/mailimport/dovecottest"
	"github.com/mailstack/mailstack/store/storetest"
)

// BenchmarkImportMaildir imports a Maildir of 20,000 messages of about
// 3 KB (four folders) and exports it again as Maildir, reporting messages
// per second of each and the heap's peak growth during the import.
func BenchmarkImportMaildir(b *testing.B) {
	root := b.TempDir()
	for _, f := range []string{"INBOX", ".Sent", ".Lists.Go", ".Archive"} {
		dovecottest.WriteMaildir(b, root, f, 5000, 3000)
	}
	st := storetest.New(b)
	ctx := context.Background()
	var importTime, exportTime time.Duration
	var peak uint64
	for i := range b.N {
		acc := newAccount(b, st, fmt.Sprintf("bench%d@example.org", i))
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		stop := make(chan struct{})
		done := make(chan uint64)
		go func() { // sample the heap while the import runs
			var max uint64
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > max {
					max = m.HeapInuse
				}
				select {
				case <-stop:
					done <- max
					return
				case <-t.C:
				}
			}
		}()
		start := time.Now()
		im := &Importer{Store: st, Account: acc}
		if err := im.ImportMaildir(ctx, root); err != nil {
			b.Fatal(err)
		}
		importTime += time.Since(start)
		close(stop)
		if m := <-done; m > before.HeapInuse {
			peak = max(peak, m-before.HeapInuse)
		}
		if s := im.Summary(); s.Copied != 20000 {
			b.Fatalf("copied %d", s.Copied)
		}
		start = time.Now()
		if _, err := (&Exporter{Store: st, Account: acc}).Export(ctx, b.TempDir(), FormatMaildir); err != nil {
			b.Fatal(err)
		}
		exportTime += time.Since(start)
	}
	b.ReportMetric(float64(20000*b.N)/importTime.Seconds(), "import-msgs/s")
	b.ReportMetric(float64(20000*b.N)/exportTime.Seconds(), "export-msgs/s")
	b.ReportMetric(float64(peak)/(1<<20), "import-heap-MiB")
}
