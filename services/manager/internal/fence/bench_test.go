package fence_test

import (
	"testing"
	"time"

	"github.com/jobsys/jobs/pkg/queue"
)

// What the fence costs a put: concurrent puts as the manager's POSTs
// make them, straight on the pool and through the fence (a put held,
// its id checked, a kick, a lease of ids taken from MongoDB now and then).
func BenchmarkPut(b *testing.B) {
	for _, fenced := range []bool{false, true} {
		name := "pool"
		if fenced {
			name = "fence"
		}
		b.Run(name, func(b *testing.B) {
			s := newSystem(b)
			m := s.manager(b, nil)
			if _, err := m.fence.Sync(ctx(b)); err != nil {
				b.Fatal(err)
			}
			put := m.pool.Put
			if fenced {
				put = m.fence.Put
			}
			o := queue.PutOptions{Tube: "work", TTR: time.Minute}
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := put(ctx(b), []byte(`{"example":"data"}`), o); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
