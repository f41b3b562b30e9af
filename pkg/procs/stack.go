package procs

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The stack's default ports: the services' and servers' own defaults,
// where devstack runs them and a person expects them.
const (
	BeanstalkdPort    = 11300
	MongoPort         = 27017
	ManagerPort       = 8080
	NotifierPort      = 8083
	WorkerMetricsPort = 8084
)

// Service is one of the stack's three services.
type Service struct {
	// Name is the binary's name: manager, worker or notifier.
	Name string
	// PortVar is the variable that sets the port it serves on (the
	// worker's is its metrics and health port); DefaultPort is its value
	// when unset.
	PortVar     string
	DefaultPort int
	// HostVar is the variable that sets the address it listens on
	// (empty: every interface).
	HostVar string
}

// The stack's services.
var (
	Manager  = Service{Name: "manager", PortVar: "MANAGER_LISTEN_PORT", DefaultPort: ManagerPort, HostVar: "MANAGER_LISTEN_HOST"}
	Worker   = Service{Name: "worker", PortVar: "WORKER_METRICS_PORT", DefaultPort: WorkerMetricsPort, HostVar: "WORKER_METRICS_HOST"}
	Notifier = Service{Name: "notifier", PortVar: "NOTIFIER_LISTEN_PORT", DefaultPort: NotifierPort, HostVar: "NOTIFIER_LISTEN_HOST"}
)

// Servers are what every service is told about beanstalkd and MongoDB.
type Servers struct {
	BeanstalkAddr            string // host:port
	MongoURL                 string
	MongoDB, MongoCollection string
}

// Env returns the variables that point a service at the servers; an
// empty field sets none.
func (s Servers) Env() map[string]string {
	env := map[string]string{}
	if s.BeanstalkAddr != "" {
		host, port, _ := net.SplitHostPort(s.BeanstalkAddr)
		env["BEANSTALK_HOST"], env["BEANSTALK_PORT"] = host, port
	}
	for k, v := range map[string]string{"MONGO_URL": s.MongoURL, "MONGO_DB": s.MongoDB, "MONGO_COLLECTION": s.MongoCollection} {
		if v != "" {
			env[k] = v
		}
	}
	return env
}

// WorkerEnv is what a worker needs on top of the servers: its id and the
// tubes it reserves from ("" leaves its default).
func WorkerEnv(id, tubes string) map[string]string {
	env := map[string]string{}
	if id != "" {
		env["WORKER_ID"] = id
	}
	if tubes != "" {
		env["WORKER_TUBES"] = tubes
	}
	return env
}

// NotifierEnv is what a notifier needs on top of the servers: the
// manager it links job pages to and asks about jobs.
func NotifierEnv(managerURL string) map[string]string {
	return map[string]string{"MANAGER_URL": managerURL}
}

// BeanstalkdArgs are beanstalkd's flags: it listens on host:port and,
// when binlog is set, keeps its jobs there, syncing at most every fsyncMS
// (negative: beanstalkd's default); maxJobSize > 0 sets -z.
func BeanstalkdArgs(host string, port int, binlog string, fsyncMS, maxJobSize int) []string {
	args := []string{"-l", host, "-p", strconv.Itoa(port)}
	if binlog != "" {
		args = append(args, "-b", binlog)
		if fsyncMS >= 0 {
			args = append(args, "-f", strconv.Itoa(fsyncMS))
		}
	}
	if maxJobSize > 0 {
		args = append(args, "-z", strconv.Itoa(maxJobSize))
	}
	return args
}

// Devmongo is the Spec of a devmongo at bin that listens on addr (port 0:
// one it chooses) with its data in dataDir; WaitReady returns its URL
// from the "listening <uri>" line it prints.
func Devmongo(bin, addr, dataDir string, flags ...string) Spec {
	return Spec{
		Name:  "devmongo",
		Path:  bin,
		Args:  append([]string{"-listen", addr, "-data", dataDir}, flags...),
		Ready: ListeningLine,
	}
}

// ListeningLine matches devmongo's "listening <uri>" line.
func ListeningLine(line string) (string, bool) {
	return strings.CutPrefix(line, "listening ")
}

// ServiceSpec is the Spec of svc from the binary at bin with env on top
// of the servers' variables. The parent binds its port and hands it the
// listener (Spec.Listen): a loopback port of its own when env does not set
// svc.PortVar (or sets it to 0), else that port on svc.HostVar's address.
// A port taken is then an error of the parent's Start, not a child that
// exits.
func ServiceSpec(svc Service, bin string, servers Servers, env map[string]string) Spec {
	vars := servers.Env()
	maps.Copy(vars, env)
	listen := "127.0.0.1:0"
	if port := vars[svc.PortVar]; port != "" && port != "0" {
		listen = net.JoinHostPort(vars[svc.HostVar], port)
	}
	return Spec{Name: svc.Name, Path: bin, Env: EnvList(vars), Listen: listen}
}

// URL is the base URL of a service child started from a ServiceSpec,
// on the loopback address whatever interface it listens on.
func URL(p *Proc) string {
	_, port, _ := net.SplitHostPort(p.Addr())
	return "http://127.0.0.1:" + port
}

// WaitHealthy waits until the service at base answers /healthz.
func WaitHealthy(ctx context.Context, p *Proc, base string, within time.Duration) error {
	return p.WaitFor(ctx, within, p.Name()+" health", HTTP(base+"/healthz"))
}

// EnvList turns vars into KEY=value strings in key order, so a child's
// environment reads the same from run to run.
func EnvList(vars map[string]string) []string {
	out := make([]string, 0, len(vars))
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		out = append(out, k+"="+vars[k])
	}
	return out
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for StartOnFreePort.
//
// It is taken at random below Linux's ephemeral range (32768-60999), not
// from the kernel: a port the kernel hands out can be taken, between this
// call and the server's bind, as the local port of one of the many
// outgoing connections of the tests that run alongside.
func FreePort() (int, error) {
	const lo, hi = 20000, 32768
	for range 100 {
		port := lo + rand.IntN(hi-lo)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // taken
		}
		_ = l.Close()
		return port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartOnFreePort starts, with start, a server on a FreePort of host and
// waits until it answers there. It is the way for a server that can
// neither take a listener nor report the port it got (beanstalkd): when
// the port was taken between FreePort and the server's bind, the server
// exits or never answers, and it is started again on another port, up to
// five times.
func StartOnFreePort(ctx context.Context, host string, within time.Duration, start func(port int) (*Proc, error)) (*Proc, int, error) {
	var errs []error
	for range 5 {
		port, err := FreePort()
		if err != nil {
			return nil, 0, err
		}
		p, err := start(port)
		if err != nil {
			return nil, 0, err
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		err = p.WaitFor(ctx, within, p.Name()+" at "+addr, TCP(addr))
		if err == nil {
			return p, port, nil
		}
		p.Kill()
		if ctx.Err() != nil {
			return nil, 0, err
		}
		errs = append(errs, err)
	}
	return nil, 0, errors.Join(errs...)
}
