package store_test

import (
	"context"
	"fmt"
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

// expired is a context whose time is up before a read starts.
func expired() (context.Context, context.CancelFunc) {
	return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
}

// A kind of read that timed out is refused at once for a back-off, as
// ErrSlow (also ErrUnavailable), while Ping says the store is slow;
// other kinds go on, and the kind works again when the back-off ends.
func TestSlowReadsBackOff(t *testing.T) {
	t.Parallel()
	client, db := devmongo.open(t)
	ctx := testenv.Context(t, 30*time.Second)
	s := store.NewResults(client, db, "results_"+testenv.RandomName())
	require.NoError(t, s.Save(ctx, result(1, "p", base)))
	require.NoError(t, s.Ping(ctx))

	require.Eventually(t, func() bool {
		ectx, cancel := expired()
		defer cancel()
		_, _ = s.After(ectx, time.Time{}, 0, 10)
		return s.Ping(ctx) != nil
	}, 5*time.Second, 10*time.Millisecond)
	err := s.Ping(ctx)
	require.ErrorIs(t, err, store.ErrSlow)
	require.ErrorIs(t, err, store.ErrUnavailable)
	require.ErrorContains(t, err, "results after a cursor")

	start := time.Now()
	_, err = s.After(ctx, time.Time{}, 0, 10)
	require.ErrorIs(t, err, store.ErrSlow)
	require.True(t, store.IsUnavailable(err))
	require.Less(t, time.Since(start), 100*time.Millisecond, "refused without asking the server")
	_, err = s.Latest(ctx, 10)
	require.NoError(t, err, "other kinds are not held back")

	require.Eventually(t, func() bool {
		rs, err := s.After(ctx, time.Time{}, 0, 10)
		return err == nil && len(rs) == 1
	}, 5*time.Second, 50*time.Millisecond, "the back-off ends")
	require.NoError(t, s.Ping(ctx))
}

// bigNumeric fills a collection with n results in the numeric layout,
// which FerretDB scans for every read, and returns a store on it.
func bigNumeric(t *testing.T, ctx context.Context, m *testenv.Mongo, n int) *store.Results {
	t.Helper()
	client := connect(t, m.URL)
	coll := client.Database("gate").Collection("results_" + testenv.RandomName())
	docs := make([]any, 0, n)
	for i := range n {
		docs = append(docs, job.Result{ID: uint64(i + 1), Hash: "h", Payload: strings.Repeat("p", 200), StoredAt: base.Add(time.Duration(i) * time.Millisecond)})
	}
	_, err := coll.InsertMany(ctx, docs)
	require.NoError(t, err)
	return store.NewResults(client, "gate", coll.Name(), store.WithServer(store.FerretDB))
}

// Reads of one kind run one at a time: a second caller waits for the
// first, and gets ErrSlow when its own time runs out first. The server
// stops working on a read whose caller gave up: devmongo's CPU falls
// back to idle at once instead of finishing the scan.
func TestOneReadOfAKindAtATimeAndCancelled(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: seeds 10,000 results")
	}
	t.Parallel()
	m := testenv.StartMongo(t)
	ctx := testenv.Context(t, 2*time.Minute)
	s := bigNumeric(t, ctx, m, 10_000)

	// How long one scan takes here, and the CPU it costs devmongo.
	c0, start := cpu(t, m.Pid()), time.Now()
	_, err := s.Latest(ctx, 10)
	require.NoError(t, err)
	scan, scanCPU := time.Since(start), cpu(t, m.Pid())-c0
	t.Logf("one scan of 10,000 results: %s, %s of devmongo's CPU", scan.Round(time.Millisecond), scanCPU)

	first := make(chan error, 1)
	go func() { _, err := s.Latest(ctx, 10); first <- err }()
	time.Sleep(scan / 4)
	wctx, cancel := context.WithTimeout(ctx, scan/4)
	start = time.Now()
	_, err = s.Latest(wctx, 10)
	cancel()
	require.ErrorIs(t, err, store.ErrSlow)
	require.ErrorContains(t, err, "still running")
	require.Less(t, time.Since(start), scan/2)
	require.NoError(t, <-first)

	// A caller that gives up after a tenth of a scan: the server's CPU in
	// the time of a scan after it is a small part of what the rest of the
	// scan would take (without maxTimeMS it is most of it).
	before := cpu(t, m.Pid())
	qctx, cancel := context.WithTimeout(ctx, scan/10)
	_, err = s.Latest(qctx, 10)
	cancel()
	require.ErrorIs(t, err, store.ErrUnavailable)
	time.Sleep(scan / 10)
	mid := cpu(t, m.Pid())
	time.Sleep(scan)
	after := cpu(t, m.Pid())
	t.Logf("devmongo CPU: %s in the read, %s in the time of a scan after it", mid-before, after-mid)
	require.Less(t, after-mid, scanCPU/4, "devmongo went on with a read no one waits for")
}

// cpu is the CPU time process pid has used.
func cpu(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err := strconv.ParseInt(f[11], 10, 64)
	require.NoError(t, err)
	stime, err := strconv.ParseInt(f[12], 10, 64)
	require.NoError(t, err)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100
}
