package faults_test

import (
	"bufio"
	"strconv"
	"strings"
	"testing"
)

// goroutines reads go_goroutines from a service's /metrics.
func goroutines(t testing.TB, baseURL string) int {
	t.Helper()
	return int(metric(t, baseURL, "go_goroutines"))
}

// metric returns the value of an unlabelled metric, or -1.
func metric(t testing.TB, baseURL, name string) float64 {
	t.Helper()
	resp, err := httpClient.Get(baseURL + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
