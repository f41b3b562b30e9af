package job_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

// TestAppendStringified: one character as JSON.stringify writes it in a
// string, lone surrogates (which a JavaScript string holds and a Go
// string cannot) included.
func TestAppendStringified(t *testing.T) {
	t.Parallel()
	for r, want := range map[rune]string{
		'a': "a", '"': `\"`, '\\': `\\`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`,
		0: `\u0000`, 0x1f: `\u001f`, 0x7f: "\x7f", '/': "/", '<': "<", '&': "&",
		0x2028: "\u2028", 0xe9: "é", 0x1f600: "😀",
		0xd800: `\ud800`, 0xdbff: `\udbff`, 0xdc00: `\udc00`, 0xdfff: `\udfff`,
	} {
		require.Equal(t, want, string(job.AppendStringified([]byte("x"), r))[1:], "rune %U", r)
	}
}
