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
	"go.mongodb.org/mongo-driver/v2/mongo"

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
	m, client, coll := seed100k(b)
	ctx := context.Background()
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

// BenchmarkClaimDone100k times a POST's work on its Idempotency-Key,
// a claim and its Done, among 100,000 records on devmongo, and reports
// devmongo's CPU per POST.
// The writes go by {_id, token} as on MongoDB (TokenFilter), or by key
// as on FerretDB (ByKey).
func BenchmarkClaimDone100k(b *testing.B) {
	m, client, _ := seed100k(b)
	ctx := context.Background()
	i := 0
	for _, c := range []struct {
		name   string
		server store.Server
	}{{"TokenFilter", store.MongoDB}, {"ByKey", store.FerretDB}} {
		k := idem.New(client, "bench", idem.Options{Window: time.Hour, Server: c.server})
		b.Run(c.name, func(b *testing.B) {
			c0 := cpu(b, m.Pid())
			for b.Loop() {
				i++
				c, err := k.Claim(ctx, fmt.Sprintf("new-%d", i), "fp")
				if err != nil || c.Outcome != idem.Claimed {
					b.Fatal(c.Outcome, err)
				}
				if err := k.Done(ctx, c, idem.Record{ID: uint64(i), Tube: "default", State: "ready"}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpu(b, m.Pid())-c0).Milliseconds())/float64(b.N), "devmongo-cpu-ms/op")
		})
	}
}

// seed100k starts a devmongo of its own holding 100,000 Idempotency-Key
// records in database bench, claimed now.
func seed100k(b *testing.B) (*testenv.Mongo, *mongo.Client, *mongo.Collection) {
	m := testenv.StartMongo(b)
	ctx := context.Background()
	client, err := store.Connect(m.URL, "bench", 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = client.Disconnect(ctx) })
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
	return m, client, coll
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
