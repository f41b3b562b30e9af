package configdoc_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/configdoc"
)

const table = `# Configuration

| variable | service | default | meaning |
| --- | --- | --- | --- |
| ` + "`PORT`" + ` | svc | ` + "`8080`" + ` | port |
| ` + "`HOST`" + ` | all | every interface | host |
| ` + "`OTHER`" + ` | other | ` + "`1`" + ` | not ours |

Text after the table.
`

type cfg struct {
	Port int
	Host string
}

func write(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "configuration.md")
	require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
	return p
}

func loader(def int, extra ...string) configdoc.Loader {
	return func(getenv func(string) string) (any, error) {
		c := cfg{Port: def, Host: getenv("HOST")}
		if v := getenv("PORT"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, err
			}
			c.Port = n
		}
		for _, e := range extra {
			getenv(e)
		}
		return c, nil
	}
}

func TestCheckAgrees(t *testing.T) {
	require.Empty(t, configdoc.Check(write(t, table), "svc", loader(8080)))
}

func TestCheckFindsEachKindOfDrift(t *testing.T) {
	p := write(t, table)
	require.Equal(t, []string{`PORT: the stated default "8080" is not the default (setting it changes the configuration)`},
		configdoc.Check(p, "svc", loader(9090)))
	require.Equal(t, []string{"NEW: read by the svc but not in " + p},
		configdoc.Check(p, "svc", loader(8080, "NEW")))
	only := func(getenv func(string) string) (any, error) { return getenv("HOST"), nil }
	require.Equal(t, []string{"PORT: in " + p + " for the svc, which never reads it"},
		configdoc.Check(p, "svc", only))
}

func TestReadRefusesARowWithoutOneName(t *testing.T) {
	_, err := configdoc.Read(write(t, "| variable | service | default | meaning |\n|---|---|---|---|\n| `A`, `B` | all | x | y |\n"))
	require.ErrorContains(t, err, "not one `NAME`")
}
