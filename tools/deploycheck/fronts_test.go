package deploycheck

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
)

// publicPorts are the plain HTTP ports of the API and the board, and the
// service behind each.
var publicPorts = map[string]string{"8080": "manager", "8083": "notifier"}

// notifierID is the notifier's id in the stack: one per task slot, which
// Swarm keeps across a task's restarts and updates.
const notifierID = "notifier-{{.Task.Slot}}"

// checkNotifierID: each notifier task has a stable id, so a new container
// finds its slot's state document instead of starting from now and leaving
// the old one behind (the default id is the hostname, the container's id).
func checkNotifierID(d *deployment) []string {
	var problems []string
	for variant, st := range d.fronted() {
		n := st.Services["notifier"]
		if got := n.Environment["NOTIFIER_ID"]; got != notifierID {
			problems = append(problems, fmt.Sprintf("%s: the notifier's NOTIFIER_ID is %q, want %q (unset, it is the container's hostname, new on every task)", variant, got, notifierID))
		}
		// Every task of a global service has slot 0.
		if n.Deploy.Mode == "global" {
			problems = append(problems, variant+": the notifier is a global service, whose tasks all have slot 0 and so one id")
		}
	}
	return problems
}

var (
	// apiRoute is the front's route for the board's /api/ calls: straight
	// to the manager, so that the manager sees the browser's address in
	// X-Forwarded-For rather than the notifier's.
	apiRoute = regexp.MustCompile(`handle_path /api/\* \{\s*reverse_proxy manager:8080\s*\}`)
	// yamlReset are compose's merge tags, which docker stack deploy ignores.
	yamlReset = regexp.MustCompile(`!(reset|override)\b`)
)

// checkFronts: the API and the board are published only by a front that
// sees each client's own address (host-mode ports) and passes it on, and
// the manager believes X-Forwarded-For only from the stack's own subnet.
// The base file publishes neither, since a second file can add ports but
// not take one away: with the TLS front the plain ports are closed.
func checkFronts(d *deployment) []string {
	var problems []string
	for _, name := range []string{"manager", "notifier"} {
		if p := d.stack.Services[name].Ports; len(p) > 0 {
			problems = append(problems, fmt.Sprintf("%s publishes %v in %s: no overlay can take that away, so it would stay open beside the TLS front", name, p, stackFile))
		}
	}
	for _, file := range []string{httpFile, tlsFile} {
		text, err := d.read(file)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if m := yamlReset.FindString(text); m != "" {
			problems = append(problems, fmt.Sprintf("%s uses %s, which docker stack deploy ignores", file, m))
		}
	}
	for variant, st := range d.fronted() {
		tls := strings.HasSuffix(variant, tlsFile)
		published := map[string]bool{}
		for name, s := range st.Services {
			for _, p := range s.Ports {
				port := fmt.Sprint(p.Published)
				if name == "front" && p.Mode != "host" {
					problems = append(problems, fmt.Sprintf("%s: the front publishes %s in mode %q: through the routing mesh it sees the entry node's address, not the client's", variant, port, p.Mode))
				}
				if _, public := publicPorts[port]; !public {
					continue
				}
				switch {
				case tls:
					problems = append(problems, fmt.Sprintf("%s: %s publishes the plain port %s beside the TLS front", variant, name, port))
				case name != "front":
					problems = append(problems, fmt.Sprintf("%s: %s publishes %s itself, not through the front", variant, name, port))
				default:
					published[port] = true
				}
			}
		}
		want := []string{"8080", "8083"}
		if tls {
			want = []string{"443"}
			for _, p := range st.Services["front"].Ports {
				published[fmt.Sprint(p.Published)] = true
			}
		}
		for _, port := range want {
			if !published[port] {
				problems = append(problems, fmt.Sprintf("%s: the front does not publish %s", variant, port))
			}
		}
		problems = append(problems, checkFrontConfig(d, variant, st)...)
		problems = append(problems, checkTrustedSubnet(variant, st)...)
	}
	// One variable moves the network and what the manager trusts.
	const moved = "10.77.16.0/20"
	if st, err := d.renderStack(map[string]string{"STACK_SUBNET": moved}); err != nil {
		problems = append(problems, err.Error())
	} else if got := st.Services["manager"].Environment["MANAGER_TRUSTED_PROXIES"]; got != moved || subnetOf(st) != moved {
		problems = append(problems, fmt.Sprintf("with STACK_SUBNET=%s the network's subnet is %q and the manager trusts %q: one variable must set both", moved, subnetOf(st), got))
	}
	return problems
}

// checkFrontConfig: the front's Caddyfile sends /api/ to the manager and
// trusts no incoming X-Forwarded-For.
func checkFrontConfig(d *deployment, variant string, st stack) []string {
	f := st.Services["front"]
	i := slices.IndexFunc(f.Configs, func(r secretRef) bool { return r.Target == "/etc/caddy/Caddyfile" })
	if i < 0 {
		return []string{variant + ": the front mounts no /etc/caddy/Caddyfile"}
	}
	c, ok := st.Configs[f.Configs[i].Source]
	if !ok {
		return []string{fmt.Sprintf("%s: the front's config %s is not declared", variant, f.Configs[i].Source)}
	}
	text, err := d.read(c.File[strings.LastIndex(c.File, "/")+1:])
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	if !apiRoute.MatchString(text) {
		problems = append(problems, fmt.Sprintf("%s: the front's Caddyfile does not send /api/ to the manager itself (handle_path /api/* { reverse_proxy manager:8080 }): through the notifier, every board call reaches the manager from the notifier's address", variant))
	}
	if regexp.MustCompile(`(?m)^[^#\n]*\btrusted_proxies\b`).MatchString(text) {
		problems = append(problems, variant+": the front's Caddyfile trusts incoming X-Forwarded-For (trusted_proxies): a client could claim any address")
	}
	return problems
}

// subnetOf is the internal network's subnet, or "".
func subnetOf(st stack) string {
	if c := st.Networks["internal"].Ipam.Config; len(c) == 1 {
		return c[0].Subnet
	}
	return ""
}

// checkTrustedSubnet: the stack's network has one fixed, narrow subnet of
// its own, apart from Docker's default ingress network, and the manager
// trusts exactly it.
func checkTrustedSubnet(variant string, st stack) []string {
	var problems []string
	subnet := subnetOf(st)
	_, n, err := net.ParseCIDR(subnet)
	if err != nil {
		return []string{fmt.Sprintf("%s: the internal network has no single fixed subnet in its ipam config (%q), so nothing says which addresses are the stack's own", variant, subnet)}
	}
	if ones, _ := n.Mask.Size(); ones < 16 {
		problems = append(problems, fmt.Sprintf("%s: the internal network's subnet %s is wider than a /16", variant, subnet))
	}
	if n.Contains(net.IPv4(10, 0, 0, 1)) {
		problems = append(problems, fmt.Sprintf("%s: the internal network's subnet %s holds Docker's default ingress network 10.0.0.0/24", variant, subnet))
	}
	if got := st.Services["manager"].Environment["MANAGER_TRUSTED_PROXIES"]; got != subnet {
		problems = append(problems, fmt.Sprintf("%s: the manager trusts X-Forwarded-For from %q, not only the stack's subnet %s", variant, got, subnet))
	}
	return problems
}

// checkBoardLinks: the board's links to the consoles follow the ports the
// consoles are published on and the public host name.
func checkBoardLinks(d *deployment) []string {
	set := map[string]string{"PUBLIC_HOST": "jobs.deploycheck.test", "MONGO_EXPRESS_PORT": "18081", "BEANSTALKD_CONSOLE_PORT": "18082"}
	st, err := d.renderStack(set)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	want := "mongo-express=http://jobs.deploycheck.test:18081,beanstalk-console=http://jobs.deploycheck.test:18082"
	if got := st.Services["notifier"].Environment["BOARD_LINKS"]; got != want {
		problems = append(problems, fmt.Sprintf("with PUBLIC_HOST, MONGO_EXPRESS_PORT and BEANSTALKD_CONSOLE_PORT set, BOARD_LINKS is %q, want %q", got, want))
	}
	var ports []string
	for _, p := range st.Services["admin"].Ports {
		ports = append(ports, fmt.Sprint(p.Published))
	}
	if !slices.Contains(ports, "18081") || !slices.Contains(ports, "18082") {
		problems = append(problems, fmt.Sprintf("with MONGO_EXPRESS_PORT=18081 and BEANSTALKD_CONSOLE_PORT=18082 the admin service publishes %v", ports))
	}
	return problems
}
