package idem_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/manager/internal/idem"
)

// BenchmarkSweep100k times one sweep of 100,000 Idempotency-Key records
// on devmongo, none expired (a sweep's usual case): the DeleteMany by
// time that Sweep replaced, Sweep (the whole collection, hourly) and the
// sweep of the start of the record order (every minute); it reports
// devmongo's CPU per sweep. On a loaded machine run them alternately,
// one -bench pattern at a time.
func BenchmarkSweep100k(b *testing.B) {
	m := testenv.StartMongo(b)
	ctx := context.Background()
	client, err := store.Connect(m.URL, "bench", 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Disconnect(ctx)
	const n = 100_000
	coll := client.Database("bench").Collection(idem.Collection)
	now := time.Now()
	for i := 0; i < n; i += 5000 {
		docs := make([]any, 0, 5000)
		for j := i; j < i+5000; j++ {
			docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("key-%08d", j)}, {Key: "fp", Value: strings.Repeat("f", 64)},
				{Key: "state", Value: "done"}, {Key: "token", Value: "0123456789abcdef01234567"}, {Key: "at", Value: now},
				{Key: "job", Value: int64(j + 1)}, {Key: "tube", Value: "default"}, {Key: "job_state", Value: "ready"}})
		}
		if _, err := coll.InsertMany(ctx, docs); err != nil {
			b.Fatal(err)
		}
	}
	k := idem.New(client, "bench", idem.Options{Window: time.Hour})
	for _, c := range []struct {
		name  string
		sweep func(context.Context) (int64, error)
	}{
		{"DeleteMany", func(ctx context.Context) (int64, error) {
			res, err := coll.DeleteMany(ctx, bson.D{{Key: "at", Value: bson.D{{Key: "$lt", Value: time.Now().Add(-time.Hour)}}}})
			if err != nil {
				return 0, err
			}
			return res.DeletedCount, nil
		}},
		{"Sweep", k.Sweep},
		{"SweepFirst", func(ctx context.Context) (int64, error) {
			return store.DeleteFirstBefore(ctx, coll, "at", time.Now().Add(-time.Hour))
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			c0 := cpu(b, m.Pid())
			for b.Loop() {
				if deleted, err := c.sweep(ctx); err != nil || deleted != 0 {
					b.Fatal(deleted, err)
				}
			}
			b.ReportMetric(float64((cpu(b, m.Pid())-c0).Milliseconds())/float64(b.N), "devmongo-cpu-ms/op")
		})
	}
}

// cpu is the CPU time process pid has used.
func cpu(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100
}
