# HAProxy in front of the front ends: Debian's package, on the same Debian bookworm base as the
# role images (compose.yaml's `haproxy` service; its config, etc/haproxy.compose.cfg, is mounted
# at /etc/bazar/haproxy.cfg). Build from the repository root:
#   docker build -f docker/haproxy.Dockerfile -t bazar-haproxy:local .

# BASE is any Debian bookworm image: the public debian:bookworm-slim by default, or one made
# from Debian's packages where no registry can be reached (docker/README.md says how).
ARG BASE=debian:bookworm-slim
FROM ${BASE}

# Debian's haproxy (2.6 in bookworm), fetched by apt over plain HTTP and checked by apt's own
# signatures, so no CA bundle is needed here. It runs as a fixed unprivileged uid of its own,
# numeric in USER (the package's `haproxy` user is left unused); it binds port 5000 (no
# privileged port, no capability), keeps no state and writes no file. Debian's versions are not
# pinned (DL3008): a stable release changes them only by fixes, and the archive drops the old ones.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10002 balancer \
    && useradd --system --uid 10002 --gid balancer --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin balancer

USER 10002:10002
EXPOSE 5000
# In the foreground (-db), logging to stdout (the config's `log stdout`); SIGTERM (docker stop)
# stops it at once, SIGUSR1 once the open connections are done.
ENTRYPOINT ["haproxy", "-db", "-f", "/etc/bazar/haproxy.cfg"]
