#!/usr/bin/env bash
# Builds one image per service, agora/<service>:<version>: a Python service's (and the
# gateway's) from deploy/Dockerfile, a Node service's (runtime = "node", ADR 39) from
# deploy/node.Dockerfile.
#
# Usage: deploy/build-images.sh [--base IMAGE] [--tag-version V] [SERVICE...]
#   --base IMAGE       the Python 3.11 image to build on (default: python:3.11-slim-bookworm;
#                      deploy/base/build-base.sh builds agora/python-base:3.11-bookworm locally)
#   --tag-version V    the version to tag and report (default: the service's pyproject version,
#                      or a Node service's package.json version)
#   SERVICE...         default: every service of topology.toml, and the gateway
# Environment: DOCKER (the docker client, default docker), UV (default .tools/bin/uv, which
# `make sync` installs).
#
# The build needs no network: this script first prepares deploy/.build/ on the machine, whose
# pip and uv reach the package index. From uv.lock it exports each service's runtime
# requirements (hashed, no dev dependencies, no workspace members), downloads those wheels
# once for all services, fetches the uv wheel the Makefile pins and builds the workspace
# members each service needs as wheels. The Dockerfile installs them with --no-index.
# A Node service is built here too, as Python's wheels are: npm ci from its committed lock, its
# build, then its development packages pruned (npm reaches its registry from this machine, not
# from inside a build); the image copies the result and this machine's node (node.Dockerfile).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."

docker="${DOCKER:-docker}"
uv="${UV:-.tools/bin/uv}"
pip=(.tools/bin/python -m pip)
build_dir=deploy/.build
base=python:3.11-slim-bookworm
tag_version=""
services=()

while (($#)); do
    case "$1" in
        --base) base="${2:?--base needs an image}"; shift 2 ;;
        --tag-version) tag_version="${2:?--tag-version needs a version}"; shift 2 ;;
        -h | --help) usage 8 ;;
        -*) fail "unknown option $1 (see --help)" ;;
        *) services+=("$1"); shift ;;
    esac
done

[[ -x "$uv" ]] || fail "$uv is missing: run 'make sync' first"

toml() { # toml FILE EXPRESSION: evaluate a Python expression over the parsed file, named t
    python3 -c 'import sys, tomllib; t = tomllib.load(open(sys.argv[1], "rb")); print(eval(sys.argv[2]))' "$1" "$2"
}

if ((${#services[@]} == 0)); then
    read -r -a services <<<"$(toml topology.toml '" ".join([*t["services"], "gateway"])')"
fi

# The workspace member that holds each service: services/<name>, or <name>/ for the gateway;
# for a Node service, the package the topology's path names.
declare -A member_of runtime_of
for service in "${services[@]}"; do
    runtime_of[$service]="$(toml topology.toml "t['services'].get('$service', {}).get('runtime', 'python')")"
    if [[ "${runtime_of[$service]}" == node ]]; then
        member_of[$service]="$(toml topology.toml "t['services']['$service']['path']")"
        [[ -f "${member_of[$service]}/package-lock.json" ]] ||
            fail "$service's package ${member_of[$service]} has no package-lock.json"
        continue
    fi
    for candidate in "services/$service" "$service"; do
        if [[ -f "$candidate/pyproject.toml" ]]; then
            member_of[$service]="$candidate"
            break
        fi
    done
    [[ -n "${member_of[$service]:-}" ]] ||
        fail "no workspace member named $service (services/$service or $service/)"
done

# The third-party wheels of every service, downloaded again only when uv.lock's export changes.
prepare_wheels() {
    local requirements="$build_dir/requirements.txt" stamp="$build_dir/wheels.sha256"
    mkdir -p "$build_dir"
    "$uv" export --quiet --frozen --no-dev --no-emit-workspace --all-packages -o "$requirements"
    if [[ -d "$build_dir/wheels" ]] && sha256sum --status -c "$stamp" 2>/dev/null; then
        say "third-party wheels are up to date"
        return
    fi
    say "downloading the locked third-party wheels into $build_dir/wheels"
    rm -rf "$build_dir/wheels"
    # pip judges markers by this machine's Python, but an image's may be another 3.11 release
    # (Debian's is 3.11.2): a requirement that depends on the Python version alone is fetched
    # whatever this one is, and the image's installer decides.
    sed -E "s/ ; python(_full)?_version *[<>=!~]+ *'[^']*'( \\\\)?$/\\2/" "$requirements" \
        >"$build_dir/download.txt"
    "${pip[@]}" download --quiet --only-binary=:all: --no-deps -r "$build_dir/download.txt" \
        -d "$build_dir/wheels"
    sha256sum "$requirements" >"$stamp"
}

prepare_uv() {
    local version
    version="$(sed -n 's/^UV_VERSION := //p' Makefile)"
    [[ -n "$version" ]] || fail "the Makefile pins no UV_VERSION"
    if ! compgen -G "$build_dir/uv/uv-$version-*.whl" >/dev/null; then
        say "downloading the uv $version wheel"
        rm -rf "$build_dir/uv"
        "${pip[@]}" download --quiet --only-binary=:all: --no-deps "uv==$version" -d "$build_dir/uv"
    fi
}

# A service's requirements, and the wheels of the workspace members it is made of.
prepare_service() {
    local service="$1" dir="$build_dir/$1" member
    rm -rf "$dir"
    mkdir -p "$dir/workspace"
    "$uv" export --quiet --frozen --no-dev --no-emit-workspace --package "$service" \
        -o "$dir/requirements.txt"
    for member in $("$uv" export --quiet --frozen --no-dev --no-hashes --no-annotate \
        --no-editable --package "$service" | sed -n 's|^\./||p'); do
        if [[ ! -d "$build_dir/members/$member" ]]; then
            "$uv" build --quiet --wheel "$member" -o "$build_dir/members/$member"
        fi
        cp "$build_dir/members/$member"/*.whl "$dir/workspace/"
    done
}

# Node itself, for the Node images: Debian 12's nodejs is 18 and no registry is reached from a
# build, so the image takes this machine's node (Node 20, a NodeSource build that needs only
# glibc, libstdc++ and libgcc, which every Debian 12 base has; `ldd "$(command -v node)"`).
prepare_node() {
    local node major
    node="$(command -v node)" || fail "a Node service needs node (Node.js 20) on this machine"
    major="$("$node" -p 'process.versions.node.split(".")[0]')"
    ((major >= 20)) || fail "$node is Node.js $major: a Node service's image needs 20 or later"
    if ! cmp -s "$node" "$build_dir/node/node" 2>/dev/null; then
        say "copying $node ($("$node" --version)) for the Node images"
        mkdir -p "$build_dir/node"
        install -m 0755 "$(readlink -f "$node")" "$build_dir/node/node"
    fi
}

# A Node service's package as its image runs it, in deploy/.build/<service>/app/: package.json,
# dist/ compiled from a copy of its sources (the package's own folder is left alone), and
# node_modules with its production dependencies only, all from its committed lock. Its packages
# are installed again only when its lock or node change (a native one may compile from source),
# its code compiled again only when its sources do.
prepare_node_service() {
    local service="$1" package="$2" dir="$build_dir/$1" packages code
    packages="$({ cat "$package/package.json" "$package/package-lock.json"; node --version; } |
        sha256sum)"
    if [[ "$(cat "$dir/packages.sha256" 2>/dev/null)" != "$packages" ]]; then
        say "installing $service's packages from $package/package-lock.json (npm ci)"
        rm -rf "$dir"
        mkdir -p "$dir/build" "$dir/app"
        cp "$package/package.json" "$package/package-lock.json" "$dir/build/"
        (cd "$dir/build" && npm ci --no-audit --no-fund --loglevel=error >&2)
        # The image's: the same packages, its development ones (compiler, linter) pruned.
        cp -a "$dir/build/package.json" "$dir/build/package-lock.json" "$dir/build/node_modules" \
            "$dir/app/"
        (cd "$dir/app" && npm prune --omit=dev --no-audit --no-fund --loglevel=error >&2)
        echo "$packages" >"$dir/packages.sha256"
    fi
    code="$( (cd "$package" && find src tsconfig.json package.json -type f -print0 | sort -z |
        xargs -0 sha256sum) | sha256sum)"
    if [[ "$(cat "$dir/code.sha256" 2>/dev/null)" != "$code" || ! -d "$dir/app/dist" ]]; then
        say "compiling $service from $package/src (npm run build)"
        rm -rf "$dir/build/src" "$dir/app/dist"
        cp -r "$package/src" "$package/tsconfig.json" "$dir/build/"
        (cd "$dir/build" && npm run --silent build >&2)
        cp -a "$dir/build/dist" "$dir/app/"
        echo "$code" >"$dir/code.sha256"
    fi
}

image_version() { # image_version SERVICE: the version its package declares
    if [[ "${runtime_of[$1]}" == node ]]; then
        node -p 'require(process.argv[1]).version' "$PWD/${member_of[$1]}/package.json"
    else
        toml "${member_of[$1]}/pyproject.toml" 't["project"]["version"]'
    fi
}

# One build at a time on this checkout: another would rewrite deploy/.build/ under this one.
exec 9<"$0"
flock 9
started=$SECONDS
prepare_wheels
prepare_uv
rm -rf "$build_dir/members"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
source_url="$(git remote get-url origin 2>/dev/null || true)"
for service in "${services[@]}"; do
    version="${tag_version:-$(image_version "$service")}"
    image="agora/$service:$version"
    dockerfile=deploy/Dockerfile
    if [[ "${runtime_of[$service]}" == node ]]; then
        prepare_node
        prepare_node_service "$service" "${member_of[$service]}"
        dockerfile=deploy/node.Dockerfile
    else
        prepare_service "$service"
    fi
    say "building $image on $base"
    # No network during the build: what it installs is in deploy/.build/.
    "$docker" build --quiet --network none -f "$dockerfile" \
        --build-arg BASE="$base" \
        --build-arg SERVICE="$service" \
        --build-arg VERSION="$version" \
        --build-arg REVISION="$revision" \
        --build-arg SOURCE="$source_url" \
        -t "$image" . >/dev/null
    echo "$image"
done
say "built ${#services[@]} image(s) in $((SECONDS - started)) s"
