// Command healthcheck probes an HTTP health endpoint and exits 0 when it
// answers 200 OK and 1 otherwise (Docker reads 1 as "unhealthy").
//
// The service images have no shell and no curl, so each one carries this
// small static binary for its HEALTHCHECK:
//
//	healthcheck http://127.0.0.1:8080/healthz
//	healthcheck -timeout 2s 'http://127.0.0.1:${MANAGER_LISTEN_PORT:-8080}/healthz'
//
// Because an exec-form HEALTHCHECK is not run by a shell, the URL may name
// environment variables itself, as $VAR, ${VAR} or ${VAR:-default}; they
// are expanded from the container's environment, so a service moved to
// another port is still probed where it listens.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run probes the URL in args and returns the process exit code. Every
// failure, a bad command line included, is 1: Docker reserves 2.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: healthcheck [-timeout 2s] URL")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 1
	}
	if fs.NArg() != 1 || *timeout <= 0 {
		fs.Usage()
		return 1
	}
	target := expand(fs.Arg(0), getenv)
	if err := probe(target, *timeout); err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	return 0
}

// probe sends one GET to target and wants 200 OK within timeout.
func probe(target string, timeout time.Duration) error {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL", target)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("build request for %s: %w", target, err)
	}
	req.Header.Set("User-Agent", "jobs-healthcheck")
	// A probe must not follow redirects to somewhere else, reuse
	// connections or honour proxy variables meant for the service.
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	resp, err := client.Do(req)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("GET %s: no answer within %s", target, timeout)
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", target, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", target, resp.Status)
	}
	return nil
}

// expand replaces $VAR, ${VAR} and ${VAR:-default} in s.
func expand(s string, getenv func(string) string) string {
	return os.Expand(s, func(name string) string {
		if key, def, ok := strings.Cut(name, ":-"); ok {
			if v := getenv(key); v != "" {
				return v
			}
			return def
		}
		return getenv(name)
	})
}
