package queue

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

// A stats-job dictionary as beanstalkd 1.12 writes it reads straight into
// job.Stats; a missing or malformed number is an error that names the
// field.
func TestParseJobStats(t *testing.T) {
	t.Parallel()
	data := "---\nid: 42\ntube: a-b+c/d;e.f$g_(h)\nstate: delayed\npri: 4294967295\nage: 3\ndelay: 60\nttr: 120\n" +
		"time-left: 57\nfile: 2\nreserves: 1\ntimeouts: 0\nreleases: 1\nburies: 0\nkicks: 0\n"
	s, err := parseJobStats([]byte(data))
	require.NoError(t, err)
	require.Equal(t, job.Stats{ID: 42, Tube: "a-b+c/d;e.f$g_(h)", State: job.StateDelayed, Pri: 4294967295, Age: 3,
		Delay: 60, TTR: 120, TimeLeft: 57, File: 2, Reserves: 1, Releases: 1}, s)

	_, err = parseJobStats([]byte("---\nid: 42\ntube: t\nstate: ready\n"))
	require.ErrorContains(t, err, `stats-job field "pri" missing`)
	require.ErrorContains(t, err, `stats-job field "kicks" missing`)

	_, err = parseJobStats([]byte(data[:len(data)-len("kicks: 0\n")] + "kicks: -1\n"))
	require.ErrorContains(t, err, `stats-job field "kicks" = "-1"`)
}

// Each of beanstalkd's answers that fails one command is its own error
// and keeps the connection; an answer that says beanstalkd could not read
// what we wrote, or one nobody expects, drops it as ErrUnavailable.
func TestAnswerErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line string
		want error
		keep bool
	}{
		{"NOT_FOUND", ErrNotFound, true},
		{"JOB_TOO_BIG", ErrJobTooBig, true},
		{"DRAINING", ErrDraining, true},
		{"BURIED", errBuried, true},
		{"TIMED_OUT", errTimedOut, true},
		{"DEADLINE_SOON", errDeadlineSoon, true},
		{"OUT_OF_MEMORY", errOutOfMemory, true},
		{"INTERNAL_ERROR", errInternal, true},
		{"BAD_FORMAT", errOutOfStep, false},
		{"UNKNOWN_COMMAND", errOutOfStep, false},
		{"EXPECTED_CRLF", errOutOfStep, false},
		{"KICKED 1", errOutOfStep, false},
	} {
		err := answerError("delete", tc.line)
		require.ErrorIs(t, err, tc.want, tc.line)
		keep, err := classify("delete", err)
		require.Equal(t, tc.keep, keep, tc.line)
		require.Equal(t, !tc.keep, errors.Is(err, ErrUnavailable), "%s: %v", tc.line, err)
		require.ErrorContains(t, err, "delete: ")
	}
}
