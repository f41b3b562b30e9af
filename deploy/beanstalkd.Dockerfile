# syntax=docker/dockerfile:1
#
# beanstalkd, from Debian's package, running as an unprivileged user whose
# uid and gid are fixed (11300), not whatever the package's adduser picks:
# the binlog volume keeps the owner it was first written by, so a rebuild
# that moved the uid would leave beanstalkd unable to write its binlog. There is no official beanstalkd image and the community
# ones are unmaintained, so we build this small one ourselves and push it
# next to the service images (deploy/build-images.sh):
#
#   docker build -t "$REGISTRY/jobs-beanstalkd:$TAG" - < deploy/beanstalkd.Dockerfile
#
# It copies nothing from a build context, so none is sent.
#
# The stack file passes the real flags (-b /data -f ... -z MAX_JOB_SIZE); the
# CMD below is the same set, for `docker run`.

ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}

# The user exists before the package is installed, so the package's own
# adduser --system finds it and keeps its ids; the last line fails the
# build if anything moved them.
RUN set -eux; \
    groupadd --system --gid 11300 beanstalkd; \
    useradd --system --uid 11300 --gid beanstalkd \
        --home-dir /var/lib/beanstalkd --no-create-home --shell /usr/sbin/nologin beanstalkd; \
    apt-get update; \
    apt-get install -y --no-install-recommends beanstalkd; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /data; \
    chown beanstalkd:beanstalkd /data; \
    test "$(id -u beanstalkd):$(id -g beanstalkd)" = "11300:11300"

# Exits 0 when beanstalkd answers a command within two seconds, 1 otherwise
# (Docker reads 1 as unhealthy). bash's /dev/tcp is enough: the image needs
# no nc or curl. "use default" gets a one-line reply, so the probe reads all
# of it and closes cleanly instead of leaving beanstalkd a reset to log.
COPY --chmod=0755 <<'EOF' /usr/local/bin/beanstalkd-healthcheck
#!/bin/bash
timeout 2 bash -c '
  exec 3<>"/dev/tcp/127.0.0.1/${1:-11300}" || exit 1
  printf "use default\r\n" >&3
  IFS= read -r line <&3 && [[ $line == "USING default"* ]]
' healthcheck "$@" || exit 1
EOF

# A named volume mounted here starts with this directory's owner, so the
# binlog is writable by the unprivileged user.
VOLUME /data
USER 11300:11300
EXPOSE 11300
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/beanstalkd-healthcheck"]
ENTRYPOINT ["/usr/bin/beanstalkd"]
CMD ["-l", "0.0.0.0", "-p", "11300", "-b", "/data", "-f", "0", "-z", "65535"]
