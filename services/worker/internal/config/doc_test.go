package config

import (
	"path/filepath"
	"testing"

	"github.com/jobsys/jobs/pkg/configdoc"
)

// The configuration table in docs/configuration.md lists exactly what the
// worker reads, with the defaults it uses.
func TestConfigurationTableMatches(t *testing.T) {
	problems := configdoc.Check(filepath.Join("..", "..", "..", "..", "docs", "configuration.md"), "worker",
		func(getenv func(string) string) (any, error) { return Load(getenv, false) })
	for _, p := range problems {
		t.Error(p)
	}
}
