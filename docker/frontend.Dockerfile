# Bazar: the front end.
#
# Stage `base` is identical in frontend/catalog/order.Dockerfile (tests/unit/test_containers.py
# checks that), so it is built once and the three role images share all its layers;
# each file adds only its role's entrypoint. Build from the repository root:
#   docker build -f docker/frontend.Dockerfile -t bazar-frontend:local .

# BASE is any Debian bookworm image: the public debian:bookworm-slim by default, or one made
# from Debian's packages where no registry can be reached (docker/README.md says how).
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/bazar/bin:$PATH

# Debian's own Python 3.11 in a venv (a system-wide pip is refused: PEP 668). A fixed,
# unprivileged uid, numeric in USER so runtimes can verify it is not root. Named volumes
# created from these directories belong to it, and every role runs as it, so the secret file
# that one container writes (mode 0600) the others can read. Debian's versions are not pinned
# (DL3008): a stable release changes them only by fixes, and the archive drops the old ones.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/bazar \
    && groupadd --system --gid 10001 bazar \
    && useradd --system --uid 10001 --gid bazar --no-create-home \
       --home-dir /var/lib/bazar --shell /usr/sbin/nologin bazar \
    && install -d -o bazar -g bazar -m 0750 /var/lib/bazar \
    && install -d -o bazar -g bazar -m 0700 /var/lib/bazar-secret \
    && install -d -m 0755 /etc/bazar

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bazar ./bazar
COPY twisted/plugins/bazar_plugins.py ./twisted/plugins/bazar_plugins.py
# A regular (non-editable) install puts bazar_plugins.py into Twisted's plugin directory.
# Building the plugin cache now, as root, spares the unprivileged user a failed write at
# every start (it cannot write to site-packages). Behind a TLS-intercepting proxy, pass its
# CA bundle as the build secret `pip-cert` (BuildKit); it is used for this step only and is
# in no layer of the image.
RUN --mount=type=secret,id=pip-cert \
    if [ -f /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && pip install --no-cache-dir . \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && rm -rf /src

WORKDIR /var/lib/bazar
USER 10001:10001

FROM base AS frontend
# The config is mounted at /etc/bazar/bazar.toml (compose.yaml does: etc/bazar.compose.toml).
EXPOSE 5000 5010
ENTRYPOINT ["twistd", "-n", "--pidfile=", "bazar-frontend", "--config", "/etc/bazar/bazar.toml"]
