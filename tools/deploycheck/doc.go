// Package deploycheck holds the tests of the Docker deployment in deploy/:
// the stack file validated by the docker client (`docker stack config`, no
// engine needed) and checked for what the deployment promises (replica set,
// binlog, healthchecks, update policies, secrets instead of default
// passwords, an encrypted network, images named by REGISTRY and TAG), the
// Dockerfiles, and the README's table of every variable the services read.
//
// It has no code of its own, only tests.
package deploycheck
