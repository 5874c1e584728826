#!/usr/bin/env bash
# Build kubetune's two images (operator/Dockerfile, trial_image/Dockerfile) without a Docker engine and without
# pulling any image: the base is a Debian root filesystem made by mmdebstrap from Debian's packages
# (hack/images/base-packages.txt), the Dockerfiles are built on it by buildah (as root, chroot isolation; overlay
# storage where the kernel mounts it, else vfs). Python packages come from PyPI inside the build, as with
# `docker build`.
#
#   hack/build-images.sh            build what changed, print the image names (KEY=value lines)
#   hack/build-images.sh --rebuild  build everything again (new Debian package versions, say)
#
# Needs: apt-get install -y buildah mmdebstrap (python3 on the host for the SBOMs).
# Everything lives under ${KUBETUNE_IMAGE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/kubetune/images}: the base root
# filesystem, the containers storage (storage.conf there; `export CONTAINERS_STORAGE_CONF=.../storage.conf` to use
# buildah or podman on it) and one CycloneDX SBOM per image (sbom/). Every image is tagged with a hash of its inputs
# (the Debian suite, mirrors and package list for the base; the base, the Dockerfile and the files it copies for the
# others), so a second run with the same inputs builds nothing.
#
# Environment: KUBETUNE_DEBIAN_SUITE (default bookworm), KUBETUNE_DEBIAN_MIRROR (default
# http://deb.debian.org/debian; a snapshot.debian.org URL pins every package version),
# KUBETUNE_DEBIAN_SECURITY_MIRROR, KUBETUNE_STORAGE_DRIVER (overlay or vfs), KUBETUNE_SYFT (a syft binary to write
# the SBOMs with), KUBETUNE_SBOM=0 to skip the SBOMs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${KUBETUNE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubetune/images}
SUITE=${KUBETUNE_DEBIAN_SUITE:-bookworm}
MIRROR=${KUBETUNE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${KUBETUNE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SBOM=${KUBETUNE_SBOM:-1}
# Bump when the way the base is made changes (hooks, dpkg options, image config): new base key.
BASE_RECIPE=1
REBUILD=0
case "${1:-}" in
  --rebuild) REBUILD=1 ;;
  "") ;;
  *) echo "usage: $0 [--rebuild]" >&2; exit 2 ;;
esac

log() { echo "build-images: $*" >&2; }
for tool in buildah mmdebstrap sha256sum; do
  command -v "$tool" >/dev/null || { log "$tool is missing: apt-get install -y buildah mmdebstrap"; exit 1; }
done
[ "$(id -u)" = 0 ] || { log "run as root (buildah with vfs storage and chroot isolation)"; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9  # one build at a time per cache

# Storage: the kernel's overlayfs when it mounts here (layers shared, nothing copied), else vfs (a full copy of
# the image per container: slower, but works on any filesystem).
DRIVER=${KUBETUNE_STORAGE_DRIVER:-}
if [ -z "$DRIVER" ]; then
  probe=$(mktemp -d "$CACHE/probe.XXXXXX")
  mkdir "$probe/l" "$probe/u" "$probe/w" "$probe/m"
  if mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
    umount "$probe/m"
    DRIVER=overlay
  else
    DRIVER=vfs
  fi
  rm -rf "$probe"
fi
cat >"$CACHE/storage.conf" <<EOF
[storage]
driver = "$DRIVER"
graphroot = "$CACHE/storage-$DRIVER"
runroot = "$CACHE/run-$DRIVER"
EOF
export CONTAINERS_STORAGE_CONF="$CACHE/storage.conf" BUILDAH_ISOLATION=chroot

# Version of the package (images are also tagged with it).
VERSION=$(python3 -c "import tomllib; print(tomllib.load(open('$ROOT/pyproject.toml', 'rb'))['project']['version'])")

have_image() { [ "$REBUILD" = 0 ] && buildah inspect --type image "$1" >/dev/null 2>&1; }

# sha256 over the names and contents of files (paths relative to $ROOT), plus extra strings.
hash_inputs() {
  local extra=$1; shift
  {
    printf '%s\n' "$extra"
    (cd "$ROOT" && for f in "$@"; do printf '%s  %s\n' "$(sha256sum <"$f" | cut -c1-64)" "$f"; done)
  } | sha256sum | cut -c1-16
}

# The files a build copies: tracked by git (so caches and stray files never reach an image), or all files when
# this is not a git checkout.
list_files() {
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -- "$@" | while read -r f; do [ -f "$f" ] && echo "$f"; done) | LC_ALL=C sort
  else
    (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
  fi
}

# A build context holding exactly the listed files.
make_context() {
  local dir=$1; shift
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$ROOT" && for f in "$@"; do mkdir -p "$dir/$(dirname "$f")" && cp -p "$f" "$dir/$f"; done)
}

# --- base: Debian's essential packages + hack/images/base-packages.txt -------------------------------------------
mapfile -t BASE_PACKAGES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$ROOT/hack/images/base-packages.txt" | tr -d ' ')
SOURCES=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main")
BASE_KEY=$(hash_inputs "$BASE_RECIPE ${SOURCES[*]} ${BASE_PACKAGES[*]}")
BASE_IMAGE=localhost/kubetune-base:$BASE_KEY
BASE_TAR=$CACHE/base-$BASE_KEY.tar

if ! have_image "$BASE_IMAGE"; then
  if [ "$REBUILD" = 1 ] || [ ! -f "$BASE_TAR" ]; then
    rm -rf "$BASE_TAR" "$BASE_TAR.tmp"
    log "base root filesystem ($SUITE: ${BASE_PACKAGES[*]}) with mmdebstrap"
    include=$(IFS=,; echo "${BASE_PACKAGES[*]}")
    # SOURCE_DATE_EPOCH: the same package versions give the same tarball.
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000} mmdebstrap --quiet --mode=root --variant=essential --format=tar \
      --include="$include" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='chroot "$1" python3 -m venv /usr/local' \
      --customize-hook='rm -rf "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old' \
      "$SUITE" "$BASE_TAR.tmp" "${SOURCES[@]}" >&2
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    find "$CACHE" -maxdepth 1 -name 'base-*.tar' ! -name "base-$BASE_KEY.tar" -exec rm -rf {} +
  fi
  log "base image $BASE_IMAGE"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$BASE_TAR" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label org.opencontainers.image.description="Debian $SUITE: ${BASE_PACKAGES[*]}" "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
fi

# --- the Dockerfiles, built on the base ----------------------------------------------------------------------------
# RUN steps use this machine's CA bundle (bind-mounted read-only, never stored in a layer), so pip reaches PyPI
# through a TLS-inspecting proxy too.
BUD_VOLUMES=()
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  BUD_VOLUMES=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi

# build NAME DOCKERFILE CONTEXT_ROOT FILES... ; sets IMAGE
build() {
  local name=$1 dockerfile=$2 context_root=$3; shift 3
  local key image ctx
  key=$(hash_inputs "$BASE_KEY $dockerfile" "$dockerfile" "$@")
  image=localhost/kubetune-$name:$key
  if ! have_image "$image"; then
    log "$image (buildah bud -f $dockerfile)"
    ctx=$CACHE/context-$name
    make_context "$ctx" "$dockerfile" "$@"
    local cache_flags=(--layers)
    [ "$REBUILD" = 1 ] && cache_flags+=(--no-cache)
    buildah bud --quiet --pull=never "${cache_flags[@]}" --build-arg BASE="$BASE_IMAGE" "${BUD_VOLUMES[@]}" \
      -f "$ctx/$dockerfile" -t "$image" "$ctx/$context_root" >&2
    rm -rf "$ctx"
  fi
  buildah tag "$image" "localhost/kubetune-$name:$VERSION"
  IMAGE=$image
}

mapfile -t OPERATOR_FILES < <(list_files pyproject.toml README.md operator/kubetune trial_image/kubetune_trial)
build operator operator/Dockerfile . "${OPERATOR_FILES[@]}"
OPERATOR_IMAGE=$IMAGE
mapfile -t TRIAL_FILES < <(list_files trial_image/pyproject.toml trial_image/kubetune_trial)
build trial trial_image/Dockerfile trial_image "${TRIAL_FILES[@]}"
TRIAL_IMAGE=$IMAGE

# Drop images of earlier inputs and the layers only they used.
for repo in base operator trial; do
  keep=$BASE_IMAGE
  case $repo in operator) keep=$OPERATOR_IMAGE ;; trial) keep=$TRIAL_IMAGE ;; esac
  buildah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep "^localhost/kubetune-$repo:" \
    | grep -v -e ":$VERSION\$" -e "^$keep\$" | xargs -r buildah rmi >/dev/null 2>&1 || true
done
buildah rmi --prune >/dev/null 2>&1 || true

# --- SBOMs: every Debian and Python package of each image, CycloneDX JSON ----------------------------------------
# By hack/images/sbom.py (dpkg's database and the dist-info directories of the image's root filesystem), or by syft
# when KUBETUNE_SYFT names its binary (`go install github.com/anchore/syft/cmd/syft@v1.57.1`).
sbom_of() {
  local image=$1 out=$2 ctr mnt rc=0
  [ -s "$out" ] && [ "$REBUILD" = 0 ] && return 0
  ctr=$(buildah from --pull=never "$image")
  mnt=$(buildah mount "$ctr")
  if [ -n "${KUBETUNE_SYFT:-}" ]; then
    "$KUBETUNE_SYFT" scan --quiet --output "cyclonedx-json=$out.tmp" --source-name "$image" "dir:$mnt" || rc=$?
  else
    python3 "$ROOT/hack/images/sbom.py" "$mnt" "$image" "$out.tmp" || rc=$?
  fi
  buildah umount "$ctr" >/dev/null
  buildah rm "$ctr" >/dev/null
  [ "$rc" = 0 ] && mv "$out.tmp" "$out"
  return "$rc"
}
SBOM_DIR=$CACHE/sbom
if [ "$SBOM" != 0 ]; then
  mkdir -p "$SBOM_DIR"
  sbom_of "$OPERATOR_IMAGE" "$SBOM_DIR/kubetune-operator-${OPERATOR_IMAGE##*:}.cdx.json"
  sbom_of "$TRIAL_IMAGE" "$SBOM_DIR/kubetune-trial-${TRIAL_IMAGE##*:}.cdx.json"
  find "$SBOM_DIR" -name '*.cdx.json' ! -name "*-${OPERATOR_IMAGE##*:}.cdx.json" \
    ! -name "*-${TRIAL_IMAGE##*:}.cdx.json" -delete
fi

echo "CONTAINERS_STORAGE_CONF=$CACHE/storage.conf"
echo "BASE_IMAGE=$BASE_IMAGE"
echo "OPERATOR_IMAGE=$OPERATOR_IMAGE"
echo "TRIAL_IMAGE=$TRIAL_IMAGE"
if [ "$SBOM" != 0 ]; then
  echo "OPERATOR_SBOM=$SBOM_DIR/kubetune-operator-${OPERATOR_IMAGE##*:}.cdx.json"
  echo "TRIAL_SBOM=$SBOM_DIR/kubetune-trial-${TRIAL_IMAGE##*:}.cdx.json"
fi
