// Package configdoc keeps the one configuration table honest: each
// service's tests check that the variables its config loader reads are
// exactly the rows of docs/configuration.md that name the service, and
// that every default the table states is the one the loader uses.
//
// The table is Markdown with the columns variable | service | default |
// meaning, one variable a row, the service column "all" or a comma list
// of services.
package configdoc

import (
	"bufio"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
)

// Row is one variable of the table.
type Row struct {
	Name     string
	Services []string
	// Default is the default cell when it is exactly one code span
	// (`250ms`), the value the loader must behave the same with; "" when
	// the cell describes the default in words.
	Default string
}

// Read parses the rows of the variable table in the Markdown file at path.
func Read(path string) ([]Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows []Row
	sc := bufio.NewScanner(f)
	inTable := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := splitRow(line)
		if len(cells) >= 4 && strings.EqualFold(cells[0], "variable") && strings.EqualFold(cells[1], "service") {
			inTable = true
			continue
		}
		if !inTable || strings.HasPrefix(cells[0], "---") || strings.HasPrefix(cells[0], ":--") {
			continue
		}
		name, ok := codeSpan(cells[0])
		if !ok {
			return nil, fmt.Errorf("%s: row %q: the variable cell is not one `NAME`", path, line)
		}
		var svcs []string
		for _, s := range strings.Split(cells[1], ",") {
			svcs = append(svcs, strings.TrimSpace(s))
		}
		def, _ := codeSpan(cells[2])
		rows = append(rows, Row{Name: name, Services: svcs, Default: def})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: no variable | service | default | meaning table", path)
	}
	return rows, nil
}

func splitRow(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	parts := strings.Split(line, "|")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// codeSpan returns s without its backticks when s is exactly one code span.
func codeSpan(s string) (string, bool) {
	if len(s) < 3 || s[0] != '`' || s[len(s)-1] != '`' || strings.Count(s, "`") != 2 {
		return "", false
	}
	return s[1 : len(s)-1], true
}

// For returns the rows that name service (or "all").
func For(rows []Row, service string) []Row {
	var out []Row
	for _, r := range rows {
		if slices.Contains(r.Services, service) || slices.Contains(r.Services, "all") {
			out = append(out, r)
		}
	}
	return out
}

// Loader loads a service's configuration through getenv.
type Loader func(getenv func(string) string) (any, error)

// Check compares what load reads with the rows of the table at path that
// name service, and returns every difference: a variable read but not in
// the table, a row the loader never reads, a stated default that loads
// differently from leaving the variable unset.
func Check(path, service string, load Loader) []string {
	rows, err := Read(path)
	if err != nil {
		return []string{err.Error()}
	}
	asked := map[string]bool{}
	record := func(env map[string]string) func(string) string {
		return func(k string) string {
			asked[k] = true
			return env[k]
		}
	}
	base, err := load(record(nil))
	if err != nil {
		return []string{fmt.Sprintf("loading with no variable set: %v", err)}
	}
	var problems []string
	documented := map[string]bool{}
	for _, r := range For(rows, service) {
		documented[r.Name] = true
		if r.Default == "" {
			continue
		}
		got, err := load(record(map[string]string{r.Name: r.Default}))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: the stated default %q is refused: %v", r.Name, r.Default, err))
			continue
		}
		if !reflect.DeepEqual(base, got) {
			problems = append(problems, fmt.Sprintf("%s: the stated default %q is not the default (setting it changes the configuration)", r.Name, r.Default))
		}
	}
	for k := range asked {
		if !documented[k] {
			problems = append(problems, fmt.Sprintf("%s: read by the %s but not in %s", k, service, path))
		}
	}
	for k := range documented {
		if !asked[k] {
			problems = append(problems, fmt.Sprintf("%s: in %s for the %s, which never reads it", k, path, service))
		}
	}
	slices.Sort(problems)
	return problems
}
