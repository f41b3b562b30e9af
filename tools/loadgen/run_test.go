package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/testenv"
)

// binDir puts the services built by the harness and devmongo in one
// directory, as `make build` does in bin/.
func binDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	devmongo, err := testenv.DevmongoPath()
	require.NoError(t, err)
	bins := map[string]string{"devmongo": devmongo}
	for _, svc := range []string{"manager", "worker", "notifier"} {
		bins[svc] = testenv.Build(t, "./services/"+svc)
	}
	for name, path := range bins {
		require.NoError(t, os.Symlink(path, filepath.Join(dir, name)))
	}
	return dir
}

// TestRunAllPhasesOnItsOwnStack runs every phase briefly on a stack of its
// own and checks the table and the JSON: every measure is there and none
// failed. Nothing here is timed; the figures are whatever this machine
// gives.
func TestRunAllPhasesOnItsOwnStack(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "artifacts", "bench.json")
	var stdout, stderr bytes.Buffer
	args := []string{"-bin", binDir(t), "-duration", "1s", "-warmup", "200ms", "-c", "4",
		"-jobs", "40", "-clients", "25", "-out", out, "-progress", "lines"}
	err := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr)
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())

	table := stdout.String()
	for _, measure := range []string{
		"ingest: POST / at c=4", "HTTP ceiling", "drain: 1 worker", "drain: 3 workers vs 3 loops",
		"end to end p99", "idle stack", "lookup: GET /N/ queued", "lookup: GET /N/ completed",
		"fan-out: notifier RSS, 25 idle clients", "fan-out: one completion to 25 clients",
		"notifier goroutines before/during/after", "replays: 10 clients at once", "durability: ingest, binlog, fsync every put",
		"durability: ingest, no binlog", "Total time:",
	} {
		require.Contains(t, table, measure)
	}
	require.NotContains(t, table, "ERROR")
	require.Contains(t, stderr.String(), "durability", "progress lines name the phases")

	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var rep struct {
		TotalSeconds float64            `json:"total_seconds"`
		PhaseSeconds map[string]float64 `json:"phase_seconds"`
		Rows         []row              `json:"rows"`
		Error        string             `json:"error"`
		Phases       struct {
			Fanout struct {
				Connected int `json:"connected"`
				Missing   int `json:"missing"`
			} `json:"fanout"`
			Drain struct {
				Runs []drainRun `json:"runs"`
			} `json:"drain"`
		} `json:"phases"`
	}
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Empty(t, rep.Error)
	require.Positive(t, rep.TotalSeconds)
	require.Len(t, rep.PhaseSeconds, len(allPhases))
	require.Equal(t, 25, rep.Phases.Fanout.Connected)
	require.Zero(t, rep.Phases.Fanout.Missing, "every client got every broadcast")
	require.Len(t, rep.Phases.Drain.Runs, 4)
	for _, r := range rep.Phases.Drain.Runs {
		require.Positive(t, r.Stored, "drain run %s", r.Tube)
	}
	for _, r := range rep.Rows {
		require.NotEqual(t, "ERROR", r.Result, r.Measure)
		if strings.HasPrefix(r.Measure, "ingest: POST") {
			require.NotNil(t, r.OursValue)
			require.Positive(t, *r.OursValue)
		}
	}
}
