#!/usr/bin/env bash
# Builds the stack's four images and, with --push, pushes them:
#
#   REGISTRY=registry.example.org/jobs TAG=$(git rev-parse --short HEAD) deploy/build-images.sh --push
#
# REGISTRY and TAG must match what `docker stack deploy` is given, since the
# stack file names the images ${REGISTRY:-localhost:5000}/jobs-*:${TAG:-latest}.
# PLATFORM (e.g. linux/amd64,linux/arm64) builds for other architectures
# with buildx; multi-platform images need --push.
set -euo pipefail

REGISTRY=${REGISTRY:-localhost:5000}
TAG=${TAG:-latest}
push=false
for arg in "$@"; do
	case $arg in
	--push) push=true ;;
	-h | --help)
		sed -n '2,10p' "$0"
		exit 0
		;;
	*)
		echo "build-images.sh: unknown argument $arg" >&2
		exit 2
		;;
	esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

build() { # image-name docker-build-arguments...
	local image="$REGISTRY/$1:$TAG"
	shift
	echo "==> $image"
	if [[ -n ${PLATFORM:-} ]]; then
		local out=--load
		if $push; then out=--push; fi
		docker buildx build --platform "$PLATFORM" "$out" -t "$image" "$@"
	else
		docker build -t "$image" "$@"
		if $push; then docker push "$image"; fi
	fi
}

for service in manager worker notifier; do
	build "jobs-$service" -f deploy/Dockerfile --target "$service" .
done
# beanstalkd's image needs no build context.
build jobs-beanstalkd - <deploy/beanstalkd.Dockerfile
