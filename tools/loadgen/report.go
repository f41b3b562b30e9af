package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Verdicts of a row.
const (
	pass = "PASS"
	miss = "MISS"
	skip = "SKIP"
)

// row is one line of the table: a measure, our figure, its floor, their
// ratio, the target, the verdict and what limits the figure.
type row struct {
	Measure string `json:"measure"`
	Ours    string `json:"ours"`
	Floor   string `json:"floor"`
	Ratio   string `json:"ratio"`
	Target  string `json:"target"`
	Result  string `json:"result"`
	Limit   string `json:"limit"`
	// Numbers behind the strings, for tools reading the JSON.
	OursValue  *float64 `json:"ours_value,omitempty"`
	FloorValue *float64 `json:"floor_value,omitempty"`
	RatioValue *float64 `json:"ratio_value,omitempty"`
	Unit       string   `json:"unit,omitempty"`
}

func num(f float64) *float64 { return &f }

// rateRow compares a rate with its floor against a minimum ratio.
func rateRow(measure, unit string, ours, floor, minRatio float64, limit string) row {
	r := row{Measure: measure, Ours: fmtRate(ours), Floor: fmtRate(floor), Unit: unit, Limit: limit,
		OursValue: num(ours), FloorValue: num(floor), Target: "—", Ratio: "—"}
	if floor > 0 {
		ratio := ours / floor
		r.RatioValue = num(ratio)
		r.Ratio = fmt.Sprintf("%.0f%%", ratio*100)
		if minRatio > 0 {
			r.Target = fmt.Sprintf(">= %.0f%%", minRatio*100)
			r.Result = verdict(ratio >= minRatio)
		}
	}
	return r
}

// maxRow compares a figure with an upper bound; floor may be absent (0).
func maxRow(measure, unit string, ours, floor, bound float64, format func(float64) string, limit string) row {
	r := row{Measure: measure, Ours: format(ours), Floor: "—", Ratio: "—", Unit: unit, Limit: limit,
		OursValue: num(ours), Target: "<= " + format(bound), Result: verdict(ours <= bound)}
	if floor > 0 {
		r.Floor, r.FloorValue = format(floor), num(floor)
		r.RatioValue = num(ours / floor)
		r.Ratio = fmt.Sprintf("%.2fx", ours/floor)
	}
	return r
}

// infoRow is a figure without a target.
func infoRow(measure, ours, floor, limit string) row {
	return row{Measure: measure, Ours: ours, Floor: floor, Ratio: "—", Target: "—", Limit: limit}
}

func skipRow(measure, why string) row {
	return row{Measure: measure, Ours: "—", Floor: "—", Ratio: "—", Target: "—", Result: skip, Limit: why}
}

func verdict(ok bool) string {
	if ok {
		return pass
	}
	return miss
}

func fmtRate(f float64) string {
	switch {
	case f >= 100:
		return strconv.FormatFloat(f, 'f', 0, 64) + "/s"
	case f >= 10:
		return strconv.FormatFloat(f, 'f', 1, 64) + "/s"
	}
	return strconv.FormatFloat(f, 'f', 2, 64) + "/s"
}

func fmtMS(f float64) string {
	if f >= 100 {
		return strconv.FormatFloat(f, 'f', 0, 64) + " ms"
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " ms"
}

func fmtMB(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) + " MB" }

// fmtPcts is "p50 / p95 / p99" of a summary.
func fmtPcts(s summary) string {
	return fmt.Sprintf("%s / %s / %s", trimMS(s.P50), trimMS(s.P95), fmtMS(s.P99))
}

func trimMS(f float64) string { return strings.TrimSuffix(fmtMS(f), " ms") }

var tableHeader = row{Measure: "measure", Ours: "ours", Floor: "floor", Ratio: "ratio", Target: "target", Result: "result", Limit: "limit"}

// writeTable prints rows as an aligned table; the limit column is last
// and not padded.
func writeTable(w io.Writer, rows []row) error {
	all := append([]row{tableHeader}, rows...)
	cols := func(r row) []string {
		return []string{r.Measure, r.Ours, r.Floor, r.Ratio, r.Target, r.Result, r.Limit}
	}
	widths := make([]int, 6)
	for _, r := range all {
		for i, c := range cols(r)[:6] {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var b, out strings.Builder
	for n, r := range all {
		c := cols(r)
		for i := range 6 {
			b.WriteString(c[i])
			b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c[i])+2))
		}
		b.WriteString(c[6])
		line := strings.TrimRight(b.String(), " ")
		b.Reset()
		out.WriteString(line)
		out.WriteString("\n")
		if n == 0 {
			total := 0
			for _, wd := range widths {
				total += wd + 2
			}
			out.WriteString(strings.Repeat("-", total+5))
			out.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, out.String())
	return err
}

// report is the JSON document a run writes.
type report struct {
	StartedAt    time.Time          `json:"started_at"`
	TotalSeconds float64            `json:"total_seconds"`
	PhaseSeconds map[string]float64 `json:"phase_seconds"`
	Interrupted  bool               `json:"interrupted,omitempty"`
	Error        string             `json:"error,omitempty"`
	Machine      machine            `json:"machine"`
	Settings     map[string]any     `json:"settings"`
	Rows         []row              `json:"rows"`
	Phases       map[string]any     `json:"phases"`
	Notes        []string           `json:"notes,omitempty"`
}

// machine describes where the run happened.
type machine struct {
	NumCPU     int       `json:"nproc"`
	CPUModel   string    `json:"cpu_model"`
	MemTotalMB int64     `json:"mem_total_mb"`
	GoVersion  string    `json:"go_version"`
	Kernel     string    `json:"kernel"`
	LoadStart  []float64 `json:"load_avg_start"`
	LoadEnd    []float64 `json:"load_avg_end,omitempty"`
}

func describeMachine() machine {
	m := machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					m.MemTotalMB = kb / 1024
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	var out []float64
	for _, s := range f[:min(3, len(f))] {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil
		}
		out = append(out, v)
	}
	return out
}

func (m machine) String() string {
	return fmt.Sprintf("%d cores (%s), %.1f GB RAM, %s, Linux %s; load average at start %v",
		m.NumCPU, m.CPUModel, float64(m.MemTotalMB)/1024, m.GoVersion, m.Kernel, m.LoadStart)
}

// writeJSON writes r to path, creating its directory.
func writeJSON(path string, r report) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
