#!/usr/bin/env bash
# Builds profiling copies of the services and devmongo into <out dir>
# (default bin-pprof): the same source plus pprof.go.in, added with `go build
# -overlay`, which serves net/http/pprof on $BENCH_PPROF_ADDR. The source
# tree is not changed. Then:
#
#   tools/loadgen/pprof/build.sh bin-pprof
#   bin/loadgen -bin bin-pprof -pprof artifacts/pprof
#   go tool pprof -top bin-pprof/manager artifacts/pprof/ingest-manager.pprof
set -euo pipefail

out=${1:-bin-pprof}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
overlay=$(mktemp)
trap 'rm -f "$overlay"' EXIT
{
	echo '{"Replace": {'
	sep=""
	for dir in services/manager services/worker services/notifier tools/devmongo; do
		printf '%s"%s/%s/zz_bench_pprof.go": "%s/pprof.go.in"' "$sep" "$root" "$dir" "$here"
		sep=$',\n'
	done
	echo '}}'
} >"$overlay"
cd "$root"
go build -overlay "$overlay" -o "$out/" ./services/manager ./services/worker ./services/notifier ./tools/devmongo
echo "profiling builds in $out"
