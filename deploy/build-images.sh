#!/usr/bin/env bash
# Builds the stack's four images and, with --push, pushes them:
#
#   REGISTRY=registry.example.org/jobs TAG=$(git rev-parse --short HEAD) deploy/build-images.sh --push
#
# REGISTRY and TAG must match what `docker stack deploy` is given, since the
# stack file names the images ${REGISTRY:-localhost:5000}/jobs-*:${TAG}.
# TAG defaults to the checkout's commit (with -dirty for uncommitted
# changes), never to latest: the stack requires TAG, and a tag that names
# one build is the only kind every node pulls the same image for.
# PLATFORM (e.g. linux/amd64,linux/arm64) builds for other architectures
# with buildx; multi-platform images need --push.
set -euo pipefail

REGISTRY=${REGISTRY:-localhost:5000}
push=false
for arg in "$@"; do
	case $arg in
	--push) push=true ;;
	-h | --help)
		sed -n '2,12p' "$0"
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

if [[ -z ${TAG:-} ]]; then
	TAG=$(git rev-parse --short HEAD) || {
		echo "build-images.sh: set TAG, or run it in a git checkout" >&2
		exit 2
	}
	if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
		TAG=$TAG-dirty
	fi
fi
if [[ $TAG == latest ]]; then
	echo "build-images.sh: TAG=latest is refused: name one build, e.g. TAG=\$(git rev-parse --short HEAD)" >&2
	exit 2
fi

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

echo "==> deploy with REGISTRY=$REGISTRY TAG=$TAG"
