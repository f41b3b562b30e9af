package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
)

// listenFD is the first descriptor a parent passes, as systemd does.
const listenFD = 3

// Listen returns the listener a service serves on: the one its parent
// passed as fd 3 when LISTEN_FDS is 1 (and LISTEN_PID, when set, is this
// process), else a new one on addr. The parent that binds the port itself
// (pkg/procs, systemd socket activation) knows the address before the
// service starts, with no window in which another process can take it.
func Listen(getenv Getenv, addr string) (net.Listener, error) {
	fds := getenv("LISTEN_FDS")
	if fds == "" {
		return net.Listen("tcp", addr)
	}
	if pid := getenv("LISTEN_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return net.Listen("tcp", addr) // meant for another process
	}
	if fds != "1" {
		return nil, fmt.Errorf("LISTEN_FDS: %q: a service serves on one listener", fds)
	}
	f := os.NewFile(listenFD, "listener")
	if f == nil {
		return nil, errors.New("LISTEN_FDS: fd 3 is not open")
	}
	defer f.Close() // FileListener holds its own copy
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("LISTEN_FDS: fd 3 is not a listener: %w", err)
	}
	return l, nil
}
