#!/usr/bin/env bash
# Builds the local base image, agora/python-base:3.11-bookworm, from Debian's own packages.
#
# The images' Dockerfile defaults to the public python:3.11-slim-bookworm; a machine that can
# reach no image registry builds this base instead and passes it with --build-arg BASE=...
# It is a minimal Debian 12 root filesystem with Debian's Python 3.11 and the public CA
# certificates, made by mmdebstrap from this machine's apt sources and imported into Docker.
#
# The image carries a label with the hash of this script: when an image with the same hash is
# already in Docker's store, nothing is built, so a second run takes seconds.
#
# Usage: deploy/base/build-base.sh [IMAGE]    (DOCKER names the docker client; default: docker)
set -euo pipefail

image="${1:-agora/python-base:3.11-bookworm}"
docker="${DOCKER:-docker}"
sources="${AGORA_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}"
script_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
label="org.agora.base.script"

say() { echo "build-base: $*" >&2; }

# One build at a time: a second run waits, then finds the image built.
exec 9<"${BASH_SOURCE[0]}"
flock 9

if [[ "$("$docker" image inspect -f "{{index .Config.Labels \"$label\"}}" "$image" 2>/dev/null)" \
    == "$script_hash" ]]; then
    say "$image is up to date (script hash $script_hash), nothing to build"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap with apt-get"
    apt-get install -y mmdebstrap >&2
fi

# Debian's archive, as this machine reaches it; without a sources file, Debian's default mirror.
mirror=()
if [[ -f "$sources" ]]; then
    mirror=("$sources")
fi

say "building $image from Debian bookworm (minbase, python3, ca-certificates)${mirror:+ with ${mirror[*]}}"
started=$SECONDS
# The root filesystem goes to a file first: a failed bootstrap must never become an image.
rootfs="$(mktemp --suffix=.tar)"
trap 'rm -f "$rootfs"' EXIT
# Documentation, manual pages and translations are left out: nothing in a container reads them.
# The copyright files stay, as Debian's licences ask.
mmdebstrap --variant=minbase --include=python3,ca-certificates --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$rootfs" "${mirror[@]}"
say "root filesystem: $(du -h "$rootfs" | cut -f1) after $((SECONDS - started)) s; importing"
"$docker" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL $label=$script_hash" \
    --change 'CMD ["python3"]' \
    "$rootfs" "$image" >/dev/null
say "built $image in $((SECONDS - started)) s ($("$docker" run --rm --network none "$image" python3 --version))"
