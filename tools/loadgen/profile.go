package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
)

// profile fetches d of CPU profile from every running process of the given
// roles (or names) that serves pprof (a build of tools/loadgen/pprof/build.sh) into
// -pprof as <label>-<process>.pprof. It returns at once; the returned
// function waits for the profiles. Without -pprof it does nothing.
func (b *bench) profile(ctx context.Context, label string, d time.Duration, roles ...string) (wait func()) {
	if b.o.pprofDir == "" || label == "" {
		return func() {}
	}
	secs := max(1, int((d+time.Second/2)/time.Second))
	var wg sync.WaitGroup
	for _, p := range b.st.live() {
		if b.st.pprofURL(p) == "" || !(slices.Contains(roles, role(p.Name())) || slices.Contains(roles, p.Name())) {
			continue
		}
		wg.Go(func() {
			path := filepath.Join(b.o.pprofDir, label+"-"+p.Name()+".pprof")
			if err := fetchProfile(ctx, b.st.pprofURL(p)+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), path); err != nil {
				b.prog.logf("profile %s of %s: %v", label, p.Name(), err)
				return
			}
			b.profMu.Lock()
			b.profiles = append(b.profiles, path)
			b.profMu.Unlock()
		})
	}
	return wg.Wait
}

// heapProfile saves the heap profile of the processes of the given roles
// (or names) as <label>-<process>.heap.pprof, with -pprof.
func (b *bench) heapProfile(ctx context.Context, label string, roles ...string) {
	if b.o.pprofDir == "" {
		return
	}
	for _, p := range b.st.live() {
		if b.st.pprofURL(p) == "" || !(slices.Contains(roles, role(p.Name())) || slices.Contains(roles, p.Name())) {
			continue
		}
		path := filepath.Join(b.o.pprofDir, label+"-"+p.Name()+".heap.pprof")
		if err := fetchProfile(ctx, b.st.pprofURL(p)+"/debug/pprof/heap", path); err != nil {
			b.prog.logf("heap profile %s of %s: %v", label, p.Name(), err)
			continue
		}
		// The text form ends with runtime.MemStats: stacks, heap spans
		// and what was returned to the OS, which the RSS includes and
		// the profile does not.
		stats := filepath.Join(b.o.pprofDir, label+"-"+p.Name()+".heap.txt")
		if err := fetchProfile(ctx, b.st.pprofURL(p)+"/debug/pprof/heap?debug=1", stats); err != nil {
			b.prog.logf("heap statistics %s of %s: %v", label, p.Name(), err)
		}
		// Where the goroutines wait: each holds a stack of 2 KB or more.
		gs := filepath.Join(b.o.pprofDir, label+"-"+p.Name()+".goroutine.txt")
		if err := fetchProfile(ctx, b.st.pprofURL(p)+"/debug/pprof/goroutine?debug=1", gs); err != nil {
			b.prog.logf("goroutines %s of %s: %v", label, p.Name(), err)
		}
		b.profMu.Lock()
		b.profiles = append(b.profiles, path)
		b.profMu.Unlock()
	}
}

func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
