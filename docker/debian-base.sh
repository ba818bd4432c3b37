#!/bin/sh
# A Debian bookworm base image made from Debian's own packages, for a machine that can reach
# Debian's archive but no image registry. Tagged debian:bookworm-slim unless told otherwise,
# which is what the Dockerfiles' default BASE names:
#
#   sudo docker/debian-base.sh [TAG]
#
# Needs root, debootstrap and a running Docker engine; takes about a minute.
set -eu
tag=${1:-debian:bookworm-slim}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"  # the image's / (mktemp makes it 0700: no other user could use it)
debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
# Slim as Debian's own slim images are: no documentation, manual pages or translations, now
# or from packages installed later; no package files or lists (a Dockerfile runs apt-get update).
cat > "$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/lib/apt/lists/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# The settings Debian's own images have (an imported image has none).
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$tag" >/dev/null
echo "$tag"
