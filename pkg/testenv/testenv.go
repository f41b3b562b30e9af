// Package testenv is the integration-test harness: it starts a real
// beanstalkd (from PATH) and the FerretDB-based devmongo server on free
// ports, and hands each test a fresh tube and database so tests run in
// parallel against shared servers.
//
// Every child gets its address without a race (see pkg/procs): a service
// serves on a listener testenv binds (ServeService, StartStack), devmongo
// listens on a port it chooses and prints it, and only beanstalkd, which
// can do neither, is started on a FreePort, again on another when the
// bind fails. FreePort is for such servers alone: a port a test closes
// and hands on can be taken before it is bound.
//
// Servers shared by a test binary start on first use and stop when the
// binary exits (call Main from TestMain; the children are also killed
// with the parent through Pdeathsig). Tests that kill or restart a server
// start their own with StartBeanstalkd or StartMongo.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
)

var (
	sharedMu   sync.Mutex
	sharedBS   *Beanstalkd
	sharedMgo  *Mongo
	sharedErr  error
	stopShared []func()
)

// Main runs the tests and then stops the shared servers. Call it from
// TestMain.
func Main(m *testing.M) {
	code := m.Run()
	sharedMu.Lock()
	for _, stop := range stopShared {
		stop()
	}
	sharedMu.Unlock()
	os.Exit(code)
}

// Bundle is what one test gets: the shared servers and names of its own.
type Bundle struct {
	Beanstalk *Beanstalkd
	Mongo     *Mongo
	// Tube and DB are fresh for this test.
	Tube string
	DB   string
}

// Context returns a context that ends after d or when the test ends: it
// bounds one step of a test, so a server that stops answering fails that
// step instead of hanging the test binary.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Setup returns the shared servers and a fresh tube and database name.
// The database is dropped when the test ends.
func Setup(t testing.TB) Bundle {
	t.Helper()
	sharedMu.Lock()
	if sharedBS == nil && sharedErr == nil {
		sharedBS, sharedErr = startBeanstalkd(BeanstalkdOptions{})
		if sharedErr == nil {
			stopShared = append(stopShared, sharedBS.Stop)
		}
	}
	if sharedMgo == nil && sharedErr == nil {
		sharedMgo, sharedErr = startMongo("")
		if sharedErr == nil {
			stopShared = append(stopShared, sharedMgo.Stop)
		}
	}
	bs, mg, err := sharedBS, sharedMgo, sharedErr
	sharedMu.Unlock()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	b := Bundle{Beanstalk: bs, Mongo: mg, Tube: "t-" + RandomName(), DB: "db_" + RandomName()}
	t.Cleanup(func() { mg.DropDatabase(b.DB) })
	return b
}

// Env returns a getenv for the services' run functions: the bundle's
// servers, tube and database, overridden by extra.
func (b Bundle) Env(extra map[string]string) func(string) string {
	vals := b.Vars()
	vals["WORKER_TUBES"] = b.Tube
	maps.Copy(vals, extra)
	return func(k string) string { return vals[k] }
}

// Vars returns the variables that point a service at the bundle's
// servers and database, with quiet text logs.
func (b Bundle) Vars() map[string]string {
	vars := procs.Servers{
		BeanstalkAddr: b.Beanstalk.Addr(), MongoURL: b.Mongo.URL,
		MongoDB: b.DB, MongoCollection: "completed",
	}.Env()
	vars["LOG_FORMAT"], vars["LOG_LEVEL"] = "text", "warn"
	return vars
}

// RandomName returns 12 random hex digits, for tubes and databases.
func RandomName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for a server that can neither take a listener nor report its port
// (beanstalkd); a caller must start again on another port when the bind
// fails (procs.StartOnFreePort). A service gets its port race-free from
// ServeService.
func FreePort() (int, error) { return procs.FreePort() }

// RepoRoot returns the directory that holds go.work.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.work not found above the working directory")
		}
		dir = parent
	}
}

// grace is how long a test's child gets after SIGTERM before SIGKILL.
const grace = 10 * time.Second

// within bounds waiting for a child to be ready.
const within = 30 * time.Second

// BeanstalkdOptions configure a beanstalkd of a test's own.
type BeanstalkdOptions struct {
	// BinlogDir turns the binlog on (-b).
	BinlogDir string
	// FsyncMS is -f (with BinlogDir); negative leaves it out.
	FsyncMS int
	// MaxJobSize is -z; 0 leaves beanstalkd's default.
	MaxJobSize int
	// BinlogSize is -s (with BinlogDir); 0 leaves beanstalkd's default.
	BinlogSize int
}

// Beanstalkd is a running beanstalkd.
type Beanstalkd struct {
	Host string
	Port int
	proc *procs.Proc
}

// Addr is host:port.
func (b *Beanstalkd) Addr() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// Kill stops beanstalkd with SIGKILL, as a crash would.
func (b *Beanstalkd) Kill() { b.proc.Kill() }

// Stop stops beanstalkd with SIGTERM.
func (b *Beanstalkd) Stop() { b.proc.Stop() }

// Freeze stops beanstalkd with SIGSTOP, as a hung host would leave it:
// its connections stay open and nothing is answered. thaw (also run at
// the test's end) sends SIGCONT.
func (b *Beanstalkd) Freeze(t testing.TB) (thaw func()) {
	t.Helper()
	pid := b.proc.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("testenv: freeze beanstalkd: %v", err)
	}
	var once sync.Once
	thaw = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(thaw)
	return thaw
}

// Restart starts beanstalkd again on the same port with the same options.
func (b *Beanstalkd) Restart() error {
	if err := b.proc.Restart(); err != nil {
		return err
	}
	return b.proc.WaitFor(context.Background(), within, "beanstalkd at "+b.Addr(), procs.TCP(b.Addr()))
}

func binlogSize(o BeanstalkdOptions) []string {
	if o.BinlogDir == "" || o.BinlogSize <= 0 {
		return nil
	}
	return []string{"-s", strconv.Itoa(o.BinlogSize)}
}

// BeanstalkdPath finds beanstalkd on PATH or in /usr/bin.
func BeanstalkdPath() (string, error) {
	if p, err := exec.LookPath("beanstalkd"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/beanstalkd"); err == nil {
		return "/usr/bin/beanstalkd", nil
	}
	return "", errors.New("beanstalkd not found on PATH: install it (apt-get install -y beanstalkd)")
}

// StartBeanstalkd starts a beanstalkd of the test's own, stopped at the
// end of the test.
func StartBeanstalkd(t testing.TB, o BeanstalkdOptions) *Beanstalkd {
	t.Helper()
	b, err := startBeanstalkd(o)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(b.Stop)
	return b
}

// startBeanstalkd starts beanstalkd on a FreePort. beanstalkd can neither
// take a listener nor report the port it got, so when the port was taken
// meanwhile it starts again on another.
func startBeanstalkd(o BeanstalkdOptions) (*Beanstalkd, error) {
	path, err := BeanstalkdPath()
	if err != nil {
		return nil, err
	}
	b := &Beanstalkd{Host: "127.0.0.1"}
	b.proc, b.Port, err = procs.StartOnFreePort(context.Background(), b.Host, within, func(port int) (*procs.Proc, error) {
		return procs.Start(procs.Spec{
			Name: "beanstalkd", Path: path, Grace: grace,
			Args: append(procs.BeanstalkdArgs(b.Host, port, o.BinlogDir, o.FsyncMS, o.MaxJobSize), binlogSize(o)...),
		})
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Mongo is a running devmongo (FerretDB over SQLite).
type Mongo struct {
	URL  string
	Addr string
	proc *procs.Proc
	base []string // the flags every start gets: address and data

	clientOnce sync.Once
	client     *mongo.Client
}

// Kill stops the server with SIGKILL.
func (m *Mongo) Kill() { m.proc.Kill() }

// Pid is the server's process id, 0 when it is not running.
func (m *Mongo) Pid() int { return m.proc.Pid() }

// Stop stops the server with SIGTERM.
func (m *Mongo) Stop() { m.proc.Stop() }

// Restart starts the server again on the same address and data.
func (m *Mongo) Restart() error {
	if err := m.proc.Restart(); err != nil {
		return err
	}
	_, err := m.proc.WaitReady(context.Background(), within)
	return err
}

// RestartWith starts the stopped server again on the same address and
// data with other extra flags.
func (m *Mongo) RestartWith(flags ...string) error {
	m.proc.SetArgs(append(slices.Clone(m.base), flags...))
	return m.Restart()
}

// Client returns a client for tests to look at the data with.
func (m *Mongo) Client() *mongo.Client {
	m.clientOnce.Do(func() {
		m.client, _ = mongo.Connect(options.Client().ApplyURI(m.URL).SetServerSelectionTimeout(5 * time.Second))
	})
	return m.client
}

// DropDatabase drops db, ignoring errors: it is cleanup.
func (m *Mongo) DropDatabase(db string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = m.Client().Database(db).Drop(ctx)
}

// StartMongo starts a devmongo of the test's own, stopped at the end of
// the test, with extra flags if given (`-replset ""` answers as a
// standalone server without change streams).
func StartMongo(t testing.TB, flags ...string) *Mongo {
	t.Helper()
	m, err := startMongo(t.TempDir(), flags...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(m.Stop)
	return m
}

// startMongo starts devmongo on a port it chooses and reads the address
// from the "listening <uri>" line it prints; restarts keep that port.
func startMongo(dataDir string, flags ...string) (*Mongo, error) {
	bin, err := DevmongoPath()
	if err != nil {
		return nil, err
	}
	if dataDir == "" {
		if dataDir, err = os.MkdirTemp("", "testenv-mongo-"); err != nil {
			return nil, err
		}
	}
	spec := procs.Devmongo(bin, "127.0.0.1:0", dataDir, flags...)
	spec.Grace = grace
	p, err := procs.Start(spec)
	if err != nil {
		return nil, err
	}
	uri, err := p.WaitReady(context.Background(), within)
	if err != nil {
		p.Kill()
		return nil, err
	}
	u, err := url.Parse(uri)
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("devmongo said %q: %w", uri, err)
	}
	m := &Mongo{URL: uri, Addr: u.Host, proc: p, base: []string{"-listen", u.Host, "-data", dataDir}}
	p.SetArgs(append(slices.Clone(m.base), flags...))
	return m, nil
}

// DevmongoPath returns $DEVMONGO_BIN or bin/devmongo under the repository
// root, building it there (once, under a file lock) when missing.
func DevmongoPath() (string, error) {
	if p := os.Getenv("DEVMONGO_BIN"); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", "devmongo")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(bin+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.Command("go", "build", "-o", bin, "./tools/devmongo")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build devmongo: %w: %s", err, out)
	}
	return bin, nil
}

// Logs returns the last procs.TailBytes the server wrote.
func (m *Mongo) Logs() string { return m.proc.Tail() }

// LogBuffer collects what a service logs from many goroutines, for tests
// that look for a line or print the log when they fail.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Pool returns a queue pool on the bundle's beanstalkd, closed when the
// test ends.
func (b Bundle) Pool(t testing.TB) *queue.Pool {
	p := queue.NewPool(queue.PoolConfig{Addr: b.Beanstalk.Addr()})
	t.Cleanup(func() { p.Close() })
	return p
}

// Results returns the results store of the bundle's database, in the
// collection the services use by default.
func (b Bundle) Results() *store.Results {
	return store.NewResults(b.Mongo.Client(), b.DB, "completed")
}

// Clients is a Bundle with the two clients most tests use: a queue pool
// on its beanstalkd and the results store of its database.
type Clients struct {
	Bundle
	Queue *queue.Pool
	Store *store.Results
}

// SetupClients is Setup with those clients made; the pool is closed when
// the test ends.
func SetupClients(t testing.TB) Clients {
	t.Helper()
	b := Setup(t)
	return Clients{Bundle: b, Queue: b.Pool(t), Store: b.Results()}
}
