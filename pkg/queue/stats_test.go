package queue

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

// A stats-job dictionary as go-beanstalk reads it from beanstalkd 1.12
// becomes job.Stats; a missing or malformed number is an error that names
// the field.
func TestJobStats(t *testing.T) {
	t.Parallel()
	m := map[string]string{"id": "42", "tube": "a-b+c/d;e.f$g_(h)", "state": "delayed", "pri": "4294967295", "age": "3",
		"delay": "60", "ttr": "120", "time-left": "57", "file": "2", "reserves": "1", "timeouts": "0", "releases": "1",
		"buries": "0", "kicks": "0"}
	s, err := jobStats(m)
	require.NoError(t, err)
	require.Equal(t, job.Stats{ID: 42, Tube: "a-b+c/d;e.f$g_(h)", State: job.StateDelayed, Pri: 4294967295, Age: 3,
		Delay: 60, TTR: 120, TimeLeft: 57, File: 2, Reserves: 1, Releases: 1}, s)

	_, err = jobStats(map[string]string{"id": "42", "tube": "t", "state": "ready"})
	require.ErrorIs(t, err, errBadStats)
	require.ErrorContains(t, err, `field "pri" = ""`)
	m["kicks"] = "-1"
	_, err = jobStats(m)
	require.ErrorContains(t, err, `field "kicks" = "-1"`)
}
