package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// benchResults is how many results BenchmarkReads seeds
// (STORE_BENCH_RESULTS, default 100,000).
func benchResults(b *testing.B) int {
	n := 100_000
	if v := os.Getenv("STORE_BENCH_RESULTS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(b, err, "STORE_BENCH_RESULTS")
	}
	return n
}

// seed fills s with n results, one a millisecond apart, in bulk.
func seed(ctx context.Context, b *testing.B, s *store.Results, n int) {
	start := time.Now()
	at := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Duration(n) * time.Millisecond)
	const batch = 5000
	for lo := 0; lo < n; lo += batch {
		rs := make([]job.Result, 0, batch)
		for i := lo; i < min(lo+batch, n); i++ {
			p := fmt.Sprintf(`{"example":"data","n":%d}`, i)
			rs = append(rs, job.Result{ID: uint64(i + 1), Hash: job.Hash(p), Payload: p, Tube: "bench", Worker: "seed",
				Attempts: 1, CompletedAt: at, StoredAt: at.Add(time.Duration(i) * time.Millisecond), DurationMS: 0.1})
		}
		_, err := s.Import(ctx, rs)
		require.NoError(b, err)
	}
	b.Logf("seeded %d results in %s", n, time.Since(start).Round(time.Millisecond))
}

// BenchmarkReads times each read of the store on devmongo holding
// STORE_BENCH_RESULTS results, in the FerretDB layout (ids as strings,
// the journal for stored order) and in the numeric layout every FerretDB
// collection had before it (the reads the store made then; leave it out
// with STORE_BENCH_LAYOUTS=keyed):
//
//	go test -run '^$' -bench Reads -benchtime 3x ./pkg/store/
func BenchmarkReads(b *testing.B) {
	n := benchResults(b)
	m := testenv.StartMongo(b)
	client, err := store.Connect(m.URL, "store-bench", 5*time.Second)
	require.NoError(b, err)
	b.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	ctx := context.Background()

	layouts := []string{"keyed", "numeric"}
	if v := os.Getenv("STORE_BENCH_LAYOUTS"); v != "" {
		layouts = strings.Split(v, ",")
	}
	for _, layout := range layouts {
		s := store.NewResults(client, "bench", "results_"+layout, store.WithServer(store.FerretDB))
		if layout == "numeric" {
			// A document with a numeric id first keeps the collection numeric.
			first := job.Result{ID: 1 << 50, Hash: "h", Payload: "p", StoredAt: time.Unix(0, 0).UTC()}
			_, err := s.Collection().InsertOne(ctx, first)
			require.NoError(b, err)
		}
		require.NoError(b, s.EnsureIndexes(ctx)) // as the services do: the keyed layout's journal
		seed(ctx, b, s, n)
		// Let devmongo index the new table (within a second).
		time.Sleep(2 * time.Second)
		last, err := s.Last(ctx)
		require.NoError(b, err)
		r := rand.New(rand.NewPCG(1, 2))
		b.Run(layout+"/Find", func(b *testing.B) {
			for b.Loop() {
				_, err := s.Find(ctx, uint64(1+r.IntN(n)))
				require.NoError(b, err)
			}
		})
		b.Run(layout+"/FindMany100", func(b *testing.B) {
			ids := make([]uint64, 100)
			for b.Loop() {
				for i := range ids {
					ids[i] = uint64(1 + r.IntN(n))
				}
				got, err := s.FindMany(ctx, ids)
				require.NoError(b, err)
				require.NotEmpty(b, got)
			}
		})
		b.Run(layout+"/MaxID", func(b *testing.B) {
			for b.Loop() {
				_, err := s.MaxID(ctx)
				require.NoError(b, err)
			}
		})
		b.Run(layout+"/Last", func(b *testing.B) {
			for b.Loop() {
				_, err := s.Last(ctx)
				require.NoError(b, err)
			}
		})
		b.Run(layout+"/Latest1000", func(b *testing.B) {
			for b.Loop() {
				rs, err := s.Latest(ctx, 1000)
				require.NoError(b, err)
				require.Len(b, rs, 1000)
			}
		})
		b.Run(layout+"/After1000", func(b *testing.B) {
			from := last.StoredAt.Add(-1000 * time.Millisecond)
			for b.Loop() {
				rs, err := s.After(ctx, from, 0, 1000)
				require.NoError(b, err)
				require.NotEmpty(b, rs)
			}
		})
	}
}
