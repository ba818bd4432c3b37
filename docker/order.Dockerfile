# Bazar: an order replica.
#
# Stage `base` is identical in frontend/catalog/order.Dockerfile (tests/unit/test_containers.py
# checks that), so BuildKit builds it once and the three role images share all its layers;
# each file adds only its role's entrypoint. Build from the repository root:
#   docker build -f docker/order.Dockerfile -t bazar-order:local .

FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# A fixed, unprivileged uid, numeric in USER so runtimes can verify it is not root. Named
# volumes created from these directories belong to it, and every role runs as it, so the
# secret file that one container writes (mode 0600) the others can read.
RUN groupadd --system --gid 10001 bazar \
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
# every start (it cannot write to site-packages).
RUN pip install --no-cache-dir . \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && rm -rf /src

WORKDIR /var/lib/bazar
USER 10001:10001

FROM base AS order
# The config is mounted at /etc/bazar/bazar.toml (compose.yaml does: etc/bazar.compose.toml);
# the replica is named by the command, e.g. `docker run ... bazar-order:local --replica order-1`.
EXPOSE 5201 5202 5203 5211 5212 5213
ENTRYPOINT ["twistd", "-n", "--pidfile=", "bazar-order", "--config", "/etc/bazar/bazar.toml"]
