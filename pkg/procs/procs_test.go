package procs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/testenv"
)

// The test binary is its own child: PROCS_HELPER says what to be.
func TestMain(m *testing.M) {
	switch os.Getenv("PROCS_HELPER") {
	case "":
		os.Exit(m.Run())
	case "serve":
		// A service in small: it serves on the listener its parent passed
		// (config.Listen, as the services do) and stops on SIGTERM.
		l, err := config.Listen(os.Getenv, "127.0.0.1:1")
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(2)
		}
		fmt.Println("listening " + l.Addr().String())
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
		go func() {
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM)
			<-sig
			_ = srv.Close()
		}()
		_ = srv.Serve(l)
		os.Exit(0)
	case "crash":
		fmt.Println("starting")
		fmt.Fprintln(os.Stderr, "fatal: the disk is on fire")
		os.Exit(3)
	case "deaf":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		time.Sleep(time.Minute)
	case "chatty":
		// One line far longer than a line may be, then ordinary ones.
		fmt.Print(strings.Repeat("x", 3*procs.TailBytes) + "\n")
		for i := range 3 {
			fmt.Printf("line %d\n", i)
		}
	}
	os.Exit(0)
}

func helper(t *testing.T, mode string) procs.Spec {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	return procs.Spec{Name: mode, Path: exe, Env: []string{"PROCS_HELPER=" + mode}}
}

func TestServiceServesOnItsParentsListener(t *testing.T) {
	t.Parallel()
	s := helper(t, "serve")
	s.Listen, s.Ready = "127.0.0.1:0", procs.ListeningLine
	p, err := procs.Start(s)
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	ctx := context.Background()

	said, err := p.WaitReady(ctx, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, p.Addr(), said, "the child serves on the listener the parent bound")
	require.NotEqual(t, "127.0.0.1:0", p.Addr())
	require.NoError(t, p.WaitFor(ctx, 10*time.Second, "health", procs.HTTP("http://"+p.Addr()+"/")))

	p.Stop()
	require.Equal(t, 0, p.ExitCode())
	// The parent kept no copy: a stopped child refuses connections.
	require.Error(t, procs.TCP(p.Addr())())

	addr := p.Addr()
	require.NoError(t, p.Restart())
	said, err = p.WaitReady(ctx, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, addr, said, "a restart serves on the same port")
}

func TestListenTakenIsTheParentsError(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	s := helper(t, "serve")
	s.Listen = l.Addr().String()
	_, err = procs.Start(s)
	require.ErrorContains(t, err, "listen on "+l.Addr().String())
}

func TestGroupReportsAnEarlyExitWithItsOutput(t *testing.T) {
	t.Parallel()
	var g procs.Group
	crash, err := g.Start(helper(t, "crash"))
	require.NoError(t, err)
	t.Cleanup(g.StopAll)

	select {
	case <-g.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("the exit was not reported")
	}
	require.Same(t, crash, g.FirstExit())
	require.Equal(t, 3, crash.ExitCode())
	err = crash.WaitFor(context.Background(), 10*time.Second, "never", func() error { return errors.New("no") })
	require.ErrorContains(t, err, "exited while waiting for never")
	require.ErrorContains(t, err, "the disk is on fire", "the error carries the child's last words")
}

func TestGroupStopIsNotAnExit(t *testing.T) {
	t.Parallel()
	var g procs.Group
	s := helper(t, "serve")
	s.Listen, s.Ready = "127.0.0.1:0", procs.ListeningLine
	a, err := g.Start(s)
	require.NoError(t, err)
	b, err := g.Start(s)
	require.NoError(t, err)
	for _, p := range []*procs.Proc{a, b} {
		_, err := p.WaitReady(context.Background(), 30*time.Second)
		require.NoError(t, err)
	}
	g.StopAll()
	require.True(t, a.Exited())
	require.True(t, b.Exited())
	require.Empty(t, g.Procs())
	select {
	case <-g.Exited():
		t.Fatalf("%s was stopped, not exited", g.FirstExit().Name())
	default:
	}
}

func TestStopKillsAChildThatIgnoresSIGTERM(t *testing.T) {
	t.Parallel()
	s := helper(t, "deaf")
	s.Grace = 300 * time.Millisecond
	s.Ready = func(line string) (string, bool) { return line, strings.HasPrefix(line, "ignoring") }
	p, err := procs.Start(s)
	require.NoError(t, err)
	_, err = p.WaitReady(context.Background(), 30*time.Second)
	require.NoError(t, err)
	start := time.Now()
	p.Stop()
	require.True(t, p.Exited())
	require.Equal(t, -1, p.ExitCode(), "killed by a signal")
	require.Less(t, time.Since(start), 20*time.Second)
}

func TestOutputIsPrefixedAndTheTailBounded(t *testing.T) {
	t.Parallel()
	var out testenv.LogBuffer
	s := helper(t, "chatty")
	s.Output, s.Prefix = &out, "chatty | "
	s.LogFile = filepath.Join(t.TempDir(), "chatty.log")
	p, err := procs.Start(s)
	require.NoError(t, err)
	<-p.Done()

	logged, err := os.ReadFile(s.LogFile)
	require.NoError(t, err)
	require.Equal(t, strings.Repeat("x", 3*procs.TailBytes)+"\nline 0\nline 1\nline 2\n", string(logged),
		"the log file gets everything, as written")

	require.LessOrEqual(t, len(p.Tail()), procs.TailBytes)
	require.True(t, strings.HasSuffix(p.Tail(), "line 0\nline 1\nline 2\n"), "the tail is the end of the output")
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Greater(t, len(lines), 4, "the over-long line is passed on in pieces")
	for _, l := range lines {
		require.True(t, strings.HasPrefix(l, "chatty | "), "%.40q", l)
		require.LessOrEqual(t, len(l), len("chatty | ")+procs.TailBytes)
	}
	require.Equal(t, "chatty | line 2", lines[len(lines)-1])
}
