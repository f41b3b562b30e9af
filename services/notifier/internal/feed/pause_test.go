package feed

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A poll round that is quick keeps the interval; a slow one is followed
// by a pause as long as itself, so polling holds the database at most
// half of the time.
func TestPollPause(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	for _, c := range []struct{ took, want time.Duration }{
		{0, 250 * ms},
		{20 * ms, 230 * ms},
		{125 * ms, 125 * ms},
		{200 * ms, 200 * ms},
		{900 * ms, 900 * ms},
	} {
		require.Equal(t, c.want, pollPause(250*ms, c.took), "took %s", c.took)
	}
}
