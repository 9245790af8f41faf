#!/usr/bin/env bash
# tests/image/standins.sh: local stand-ins for docker/Dockerfile's public base images, which
# cannot be pulled here (no registry is reachable), made from Debian's packages with mmdebstrap.
#
#   tests/image/standins.sh runtime    distroless cc-debian12:nonroot's stand-in: bookworm's
#                                      libc6, libgcc-s1, ca-certificates, base-files, netbase,
#                                      tzdata and the user nonroot (65532); no shell
#   tests/image/standins.sh builder    rust:1.95-bookworm's stand-in: bookworm minbase + gcc +
#                                      libc6-dev, this machine's Rust toolchain, and the crates of
#                                      Cargo.lock vendored (cargo runs offline in the build)
#   tests/image/standins.sh oldglibc   a Debian bullseye rootfs (glibc 2.31, older than Ubuntu
#                                      22.04's 2.35, the oldest Triton image) for `install`'s copy
#
# Each prints the image reference on stdout (progress goes to stderr). Images are cached by
# content: the tag is a hash of their inputs (this script, distroless_rootfs.py, the suite, the
# package list, the mirror, `rustc -vV`, Cargo.lock), so a second run finds them and makes
# nothing; an input that changes makes a new tag and the older one is removed. Debian point
# releases do not change the hash (like a tag, not a digest): delete the images
# (`podman rmi` on localhost/triton-sidecar-standin/*) to pick them up.
#
# Network: the Debian mirror (mmdebstrap) and, for crates missing from ~/.cargo's cache, the
# crates.io index (cargo vendor). Nothing else.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

log() { echo "standins: $*" >&2; }
key() { # sha256 of this script, the rootfs cutter and the arguments, 16 hex digits
  { cat "$IMAGE_HERE/standins.sh" "$IMAGE_HERE/distroless_rootfs.py" "$IMAGE_HERE/common.sh"
    printf '%s\n' "$@"; } | sha256sum | cut -c1-16
}
# Remove the other tags of one stand-in (older inputs). An image still in use stays.
prune_others() { # name tag
  local ref
  podman images --noheading --format '{{.Repository}}:{{.Tag}}' "$STANDIN_REPO/$1" 2>/dev/null \
    | { grep -vx "$STANDIN_REPO/$1:$2" || true; } | while read -r ref; do
      podman rmi "$ref" >/dev/null 2>&1 && log "removed the older $ref" || true
    done
}
mmdebstrap_q() { # quiet unless it fails
  local logf; logf="$(mktemp)"
  if ! mmdebstrap "$@" >"$logf" 2>&1; then tail -30 "$logf" >&2; rm -f "$logf"; return 1; fi
  rm -f "$logf"
}

runtime() {
  local pkgs=(libc6 libgcc-s1 ca-certificates base-files netbase tzdata)
  local k; k="$(key runtime bookworm "$DEBIAN_MIRROR" "${pkgs[@]}")"
  local ref="$STANDIN_REPO/runtime:$k"
  if ! podman image exists "$ref"; then
    local t0=$SECONDS d="$IMAGE_WORK/runtime-$k"
    rm -rf "$d"; mkdir -p "$d"
    log "making $ref (mmdebstrap bookworm, then only the files of ${pkgs[*]})"
    # essential: dpkg, a shell and coreutils to run the postinsts (the CA bundle), then cut away.
    mmdebstrap_q --variant=essential --include="$(IFS=,; echo "${pkgs[*]}")" \
      bookworm "$d/full" "$DEBIAN_MIRROR"
    python3 "$IMAGE_HERE/distroless_rootfs.py" "$d/full" "$d/rootfs.tar" "${pkgs[@]}" >&2
    local versions
    versions="$(dpkg-query --admindir="$d/full/var/lib/dpkg" -W -f '${Package}=${Version} ' "${pkgs[@]}")"
    # distroless nonroot's config: user, home, PATH and the CA bundle's path.
    podman import -q \
      --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
      --change "LABEL org.opencontainers.image.description=\"stand-in for gcr.io/distroless/cc-debian12:nonroot: ${versions% }\"" \
      "$d/rootfs.tar" "$ref" >/dev/null
    rm -rf "$d"
    prune_others runtime "$k"
    log "made $ref in $((SECONDS - t0)) s"
  fi
  echo "$ref"
}

# The toolchain layer: Debian + gcc + this machine's rustc/cargo. Cached apart from the crates
# (next function) because it is the big one (about 1 GB) and changes only with the toolchain.
rust_base() {
  local sysroot vv
  sysroot="$(rustc --print sysroot)"
  vv="$(rustc -vV; cargo -V)"
  local k; k="$(key rust bookworm "$DEBIAN_MIRROR" "$vv")"
  local ref="$STANDIN_REPO/rust:$k"
  if ! podman image exists "$ref"; then
    local t0=$SECONDS d="$IMAGE_WORK/rust-$k"
    rm -rf "$d"; mkdir -p "$d"
    log "making $ref (mmdebstrap bookworm minbase + gcc, toolchain from $sysroot)"
    # The rust image's own Debian packages that the build uses: gcc (linker, and cc for build
    # scripts), libc6-dev, and dpkg/apt for the Dockerfile's cross path (minbase has them).
    mmdebstrap_q --variant=minbase --include=gcc,libc6-dev,ca-certificates \
      bookworm "$d/full" "$DEBIAN_MIRROR"
    # The toolchain without share/ (documentation, about 800 MB). rustc finds its sysroot from
    # its own path, so the copy works from /usr/local/rust.
    mkdir -p "$d/full/usr/local/rust" "$d/full/usr/local/cargo/bin"
    local part
    for part in bin lib libexec etc; do
      if [[ -e "$sysroot/$part" ]]; then cp -a "$sysroot/$part" "$d/full/usr/local/rust/"; fi
    done
    tar --numeric-owner -C "$d/full" -cf "$d/rootfs.tar" .
    # The rust image's environment: CARGO_HOME=/usr/local/cargo (the Dockerfile's cache mount is
    # its registry/). No rustup: it could not download a target's std offline anyway.
    podman import -q \
      --change 'ENV CARGO_HOME=/usr/local/cargo' \
      --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change "LABEL org.opencontainers.image.description=\"stand-in for docker.io/library/rust: $(rustc -V)\"" \
      "$d/rootfs.tar" "$ref" >/dev/null
    rm -rf "$d"
    prune_others rust "$k"
    log "made $ref in $((SECONDS - t0)) s"
  fi
  echo "$ref"
}

# The builder: rust_base plus the crates of Cargo.lock, vendored, with a cargo config that
# replaces crates.io by them and turns the network off, so the image build needs no registry.
# Outside /usr/local/cargo/registry, which the Dockerfile's cache mount would hide.
builder() {
  local base; base="$(rust_base)"
  local k; k="$(key builder "$base" "$(sha256sum "$IMAGE_ROOT/Cargo.lock" | cut -d' ' -f1)")"
  local ref="$STANDIN_REPO/builder:$k"
  if ! podman image exists "$ref"; then
    local t0=$SECONDS d="$IMAGE_WORK/builder-$k"
    rm -rf "$d"; mkdir -p "$d"
    log "making $ref (cargo vendor of Cargo.lock on $base)"
    # All platforms' crates (cargo vendor cannot filter by target); ~/.cargo's cache serves those
    # it has, the crates.io index the rest.
    (cd "$IMAGE_ROOT" && cargo vendor --locked --quiet --versioned-dirs "$d/vendor" >/dev/null)
    cat >"$d/config.toml" <<'TOML'
[source.crates-io]
replace-with = "vendored-crates"

[source.vendored-crates]
directory = "/usr/local/cargo/vendor"

[net]
offline = true
TOML
    cat >"$d/Containerfile" <<CF
FROM $base
COPY vendor/ /usr/local/cargo/vendor/
COPY config.toml /usr/local/cargo/config.toml
CF
    podman build -q "${PODMAN_FLAGS[@]}" -t "$ref" "$d" >/dev/null
    rm -rf "$d"
    prune_others builder "$k"
    log "made $ref in $((SECONDS - t0)) s ($(podman image inspect -f '{{.Size}}' "$ref") bytes)"
  fi
  echo "$ref"
}

oldglibc() {
  local k; k="$(key oldglibc bullseye "$DEBIAN_MIRROR")"
  local ref="$STANDIN_REPO/bullseye:$k"
  if ! podman image exists "$ref"; then
    local t0=$SECONDS d="$IMAGE_WORK/bullseye-$k"
    rm -rf "$d"; mkdir -p "$d"
    log "making $ref (mmdebstrap bullseye essential)"
    mmdebstrap_q --variant=essential bullseye "$d/rootfs.tar" "$DEBIAN_MIRROR"
    podman import -q "$d/rootfs.tar" "$ref" >/dev/null
    rm -rf "$d"
    prune_others bullseye "$k"
    log "made $ref in $((SECONDS - t0)) s"
  fi
  echo "$ref"
}

case "${1:-}" in
  runtime|builder|oldglibc|rust_base) "$1" ;;
  *) echo "usage: $0 runtime|builder|oldglibc" >&2; exit 2 ;;
esac
