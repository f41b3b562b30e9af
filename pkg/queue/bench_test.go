package queue_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
)

// benchCallers is how many goroutines call the pool at once: about what
// the manager sees under the ingest and lookup load of `make bench`.
const benchCallers = 64

// benchParallel runs op from benchCallers goroutines, b.N calls in all,
// against the beanstalkd at addr. Besides the time per call it reports
// the CPU time per call of this process and of beanstalkd: on a busy
// machine the wall time says little, and fewer writes and reads for the
// same calls show in both.
func benchParallel(b *testing.B, addr string, op func(i uint64) error) {
	b.Helper()
	p := queue.NewPool(queue.PoolConfig{Addr: addr})
	defer p.Close()
	serverCPU := func() time.Duration {
		m, err := p.ServerStats(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		return seconds(b, m["rusage-utime"]) + seconds(b, m["rusage-stime"])
	}
	b.SetParallelism(max(1, benchCallers/runtime.GOMAXPROCS(0)))
	var n atomic.Uint64
	server0, self0 := serverCPU(), selfCPU(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(n.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(selfCPU(b)-self0)/float64(b.N), "client-cpu-ns/op")
	b.ReportMetric(float64(serverCPU()-server0)/float64(b.N), "beanstalkd-cpu-ns/op")
}

func seconds(b *testing.B, s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		b.Fatalf("rusage %q: %v", s, err)
	}
	return time.Duration(f * float64(time.Second))
}

// selfCPU is the CPU time this process has used.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Concurrent puts to one tube, as the manager's POST makes them.
func BenchmarkPoolPut(b *testing.B) {
	bs := testenv.StartBeanstalkd(b, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	ctx := context.Background()
	body := []byte(`{"example":"data"}`)
	benchParallel(b, bs.Addr(), func(uint64) error {
		_, err := p.Put(ctx, body, queue.PutOptions{Tube: "bench", TTR: time.Minute})
		return err
	})
}

// Concurrent stats-jobs of known jobs, as the manager's GET of a queued
// job makes them.
func BenchmarkPoolStatsJob(b *testing.B) {
	bs := testenv.StartBeanstalkd(b, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	ctx := context.Background()
	const jobs = 1000
	for range jobs {
		if _, err := p.Put(ctx, []byte("{}"), queue.PutOptions{Tube: "bench", TTR: time.Minute}); err != nil {
			b.Fatal(err)
		}
	}
	benchParallel(b, bs.Addr(), func(i uint64) error {
		_, err := p.StatsJob(ctx, 1+i%jobs)
		return err
	})
}
