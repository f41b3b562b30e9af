package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress shows how far the run is on stderr: one line rewritten in
// place with \r on a terminal ("bar"), a plain line per step and every few
// seconds otherwise ("lines"), or nothing ("off"). Steps carry an
// estimated duration so the whole run has a percentage.
type progress struct {
	w     io.Writer
	mode  string
	start time.Time
	total time.Duration

	mu        sync.Mutex
	doneEst   time.Duration
	step      string
	stepStart time.Time
	stepEst   time.Duration
	frac      float64 // of the step; negative when unknown
	detail    string
	lastLine  time.Time

	stop chan struct{}
	wg   sync.WaitGroup
}

// progressMode resolves "auto": a bar when stderr is a terminal.
func progressMode(mode string, f *os.File) string {
	if mode != "auto" {
		return mode
	}
	if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return "bar"
	}
	return "lines"
}

func newProgress(w io.Writer, mode string, total time.Duration) *progress {
	p := &progress{w: w, mode: mode, start: time.Now(), total: total, stop: make(chan struct{})}
	if mode == "off" {
		return p
	}
	every := 5 * time.Second
	if mode == "bar" {
		every = 200 * time.Millisecond
	}
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case now := <-t.C:
				p.mu.Lock()
				if p.mode == "bar" || now.Sub(p.lastLine) >= every-time.Millisecond {
					p.draw(now)
				}
				p.mu.Unlock()
			}
		}
	})
	return p
}

// begin starts a step expected to take about est.
func (p *progress) begin(step string, est time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.step, p.stepStart, p.stepEst, p.frac, p.detail = step, time.Now(), est, -1, ""
	if p.mode == "lines" {
		p.draw(time.Now())
	}
}

// set reports how far the step is (frac in [0,1], or negative when
// unknown) and what it is doing.
func (p *progress) set(frac float64, detail string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frac, p.detail = frac, detail
}

// end finishes the current step.
func (p *progress) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doneEst += p.stepEst
	p.step, p.detail = "", ""
}

// logf prints a line of its own above the bar.
func (p *progress) logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == "off" {
		return
	}
	if p.mode == "bar" {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	fmt.Fprintf(p.w, "loadgen: "+format+"\n", args...)
	if p.mode == "bar" {
		p.draw(time.Now())
	}
}

// close stops the ticker and clears the bar.
func (p *progress) close() {
	if p.mode == "off" {
		return
	}
	close(p.stop)
	p.wg.Wait()
	if p.mode == "bar" {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

func (p *progress) draw(now time.Time) {
	p.lastLine = now
	line := p.line(now)
	if p.mode == "bar" {
		fmt.Fprint(p.w, "\r"+line+"\x1b[K")
		return
	}
	fmt.Fprintln(p.w, line)
}

// line renders the state at now. Without a step fraction the step's
// elapsed time stands in for it, up to 95% of its estimate.
func (p *progress) line(now time.Time) string {
	done := p.doneEst
	if p.step != "" {
		part := time.Duration(p.frac * float64(p.stepEst))
		if p.frac < 0 {
			part = min(now.Sub(p.stepStart), p.stepEst*95/100)
		}
		done += min(part, p.stepEst)
	}
	frac := 0.0
	if p.total > 0 {
		frac = min(1, float64(done)/float64(p.total))
	}
	const width = 24
	filled := int(frac * width)
	bar := "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
	s := fmt.Sprintf("%s %3.0f%% %6s", bar, frac*100, now.Sub(p.start).Round(time.Second))
	if p.step != "" {
		s += "  " + p.step
		if p.detail != "" {
			s += ": " + p.detail
		}
	}
	return s
}
