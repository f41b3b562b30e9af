package main

import (
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestA"}`,
		`{"Action":"pass","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"    x_test.go:9: no replica set here\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestB"}`,
		`{"Action":"output","Package":"p","Test":"TestC","Output":"boom\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestC"}`,
		`{"Action":"fail","Package":"p","Elapsed":1.5}`,
	}, "\n")
	var out strings.Builder
	code := run(strings.NewReader(in), &out)
	s := out.String()
	if code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	for _, want := range []string{"FAIL\tp\t1.5s", "--- FAIL: TestC (p)", "boom", "TestB (p): x_test.go:9: no replica set here", "1 passed, 1 failed, 1 skipped"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if code := run(strings.NewReader(""), &out); code != 1 {
		t.Errorf("an empty run must fail, got %d", code)
	}
}

// A package that a panic ended, or that did not build, has no failed test
// of its own: it is counted and listed as a failure all the same.
func TestSummaryCountsAPackageThatFailedWithoutAFailedTest(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"pass","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"q","Output":"panic: runtime error: invalid memory address\n"}`,
		`{"Action":"fail","Package":"q","Elapsed":0.1}`,
	}, "\n")
	var out strings.Builder
	if code := run(strings.NewReader(in), &out); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	for _, want := range []string{"--- FAIL: the package itself (q)", "panic: runtime error", "1 passed, 1 failed, 0 skipped"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}
