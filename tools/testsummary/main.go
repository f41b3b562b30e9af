// Command testsummary reads `go test -json` from stdin and prints what a
// person needs: one line per package as go test prints it, the output of
// every failed test, every skipped test with its reason, and a closing
// line "N passed, N failed, N skipped". It exits 1 when anything failed
// or when the stream holds no test at all.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout))
}

func run(in io.Reader, out io.Writer) int {
	outputs := map[string]*strings.Builder{} // package/test -> output
	var passed, failed, skipped int
	var failures, skips []string
	var pkgLines []string
	pkgFailed := false
	failedIn := map[string]int{} // failed tests by package

	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(out, sc.Text()) // build errors and the like come as plain text
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			if b.Len() < 256<<10 {
				b.WriteString(e.Output)
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				status := map[string]string{"pass": "ok  ", "fail": "FAIL", "skip": "?   "}[e.Action]
				line := fmt.Sprintf("%s\t%s\t%.1fs", status, e.Package, e.Elapsed)
				if e.Action == "fail" {
					pkgFailed = true
					if b := outputs[key]; b != nil {
						line += "\n" + indent(b.String())
					}
					if failedIn[e.Package] == 0 {
						// No test of it failed: it did not build, or a panic
						// ended it; that counts, and is listed, as a failure.
						failed++
						failures = append(failures, fmt.Sprintf("--- FAIL: the package itself (%s)\n%s", e.Package, indent(text(outputs[key]))))
					}
				}
				pkgLines = append(pkgLines, line)
				fmt.Fprintln(out, line)
				continue
			}
			switch e.Action {
			case "pass":
				passed++
			case "fail":
				failed++
				failedIn[e.Package]++
				failures = append(failures, fmt.Sprintf("--- FAIL: %s (%s)\n%s", e.Test, e.Package, indent(text(outputs[key]))))
			case "skip":
				skipped++
				skips = append(skips, fmt.Sprintf("%s (%s): %s", e.Test, e.Package, skipReason(text(outputs[key]))))
			}
		}
	}
	sort.Strings(skips)
	if len(failures) > 0 {
		fmt.Fprintln(out, "\nFailed tests:")
		for _, f := range failures {
			fmt.Fprintln(out, f)
		}
	}
	if len(skips) > 0 {
		fmt.Fprintf(out, "\nSkipped tests (%d):\n", len(skips))
		for _, s := range skips {
			fmt.Fprintln(out, "  "+s)
		}
	}
	fmt.Fprintf(out, "\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || pkgFailed || passed == 0 {
		return 1
	}
	return 0
}

func text(b *strings.Builder) string {
	if b == nil {
		return ""
	}
	return b.String()
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// skipReason picks the t.Skip message out of a skipped test's output.
func skipReason(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return "(no reason given)"
	}
	return strings.Join(lines, " ")
}
