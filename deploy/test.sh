#!/usr/bin/env bash
# Adds jobs to the queue in bulk, as the original system's test.sh did:
#
#   ./test.sh manager.example.com:8080 128
#
# POSTs <count> jobs with random JSON payloads to the manager at
# <host:port> (or a full http:// or https:// URL), prints each new job's id
# on its own line, and stops with a non-zero status at the first request
# that fails. Needs bash and curl.
set -euo pipefail

usage() {
	echo "usage: $0 <host:port> <count>" >&2
	echo "  e.g. $0 localhost:8080 128   adds 128 jobs and prints their ids" >&2
	exit 2
}

if [[ $# -ne 2 || -z $1 || ! $2 =~ ^[0-9]+$ ]] || ((10#$2 < 1)); then
	usage
fi
count=$((10#$2))
url=$1
if [[ $url != http://* && $url != https://* ]]; then
	url="http://$url"
fi
url="${url%/}/"
command -v curl >/dev/null || {
	echo "test.sh: curl is required" >&2
	exit 1
}

for ((i = 1; i <= count; i++)); do
	payload=$(printf '{"example":"data","n":%d,"random":"%04x%04x%04x%04x"}' "$i" "$RANDOM" "$RANDOM" "$RANDOM" "$RANDOM")
	# The status code follows the body on a line of its own.
	if ! out=$(curl -sS --max-time 10 -X POST "$url" -H "Content-Type: application/json" \
		--data "$payload" -w $'\n%{http_code}' 2>&1); then
		echo "test.sh: job $i of $count: request to $url failed: ${out%$'\n'*}" >&2
		exit 1
	fi
	code=${out##*$'\n'}
	body=${out%$'\n'*}
	if [[ $code != 2?? ]]; then
		echo "test.sh: job $i of $count: $url answered $code: $body" >&2
		exit 1
	fi
	if [[ ! $body =~ \"id\":[[:space:]]*([0-9]+) ]]; then
		echo "test.sh: job $i of $count: no job id in the answer: $body" >&2
		exit 1
	fi
	echo "${BASH_REMATCH[1]}"
done
