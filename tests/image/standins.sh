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
#   tests/image/standins.sh oldglibc   an Ubuntu 22.04 rootfs (glibc 2.35, the base of the oldest
#                                      Triton images) for `install`'s copy
#
# Each prints the image reference on stdout (progress goes to stderr). Images are cached by
# content: the tag is a hash of their inputs (the code that makes each, distroless_rootfs.py, the
# suite, the package list, the mirror, `rustc -vV`, Cargo.lock), so a second run finds them and makes
# nothing; an input that changes makes a new tag and the older one is removed. Debian point
# releases do not change the hash (like a tag, not a digest): delete the images
# (`podman rmi` on localhost/triton-sidecar-standin/*) to pick them up.
#
# Network: the Debian mirror and the Ubuntu archive (mmdebstrap) and, for crates missing from
# ~/.cargo's cache, crates.io (cargo vendor). Nothing else.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

log() { echo "standins: $*" >&2; }
# The cache key: sha256 (16 hex digits) of the function that makes the image, as bash prints it
# (code only, so a comment edit keeps the cache), of the helpers it calls, and of the other
# inputs given as arguments.
key() { # function input...
  local fn="$1"; shift
  { declare -f "$fn" mmdebstrap_q; printf '%s\n' "$@"; } | sha256sum | cut -c1-16
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
  local k; k="$(key runtime bookworm "$DEBIAN_MIRROR" "${pkgs[@]}" "$(cat "$IMAGE_HERE/distroless_rootfs.py")")"
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
  local k; k="$(key rust_base bookworm "$DEBIAN_MIRROR" "$vv")"
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

# Ubuntu 22.04's archive signing key: the keyring package from the archive itself, pinned by its
# sha256 (and its key checked by fingerprint), since Debian bookworm ships no ubuntu-keyring.
UBUNTU_KEYRING_DEB="pool/main/u/ubuntu-keyring/ubuntu-keyring_2021.03.26_all.deb"
UBUNTU_KEYRING_SHA256="0d0e7ed6b112f5d03eabf3c7eb01ebdacf9c57714b279e90495cfc58c8c4520f"
UBUNTU_ARCHIVE_KEY="F6ECB3762474EDA9D21B7022871920D1991BC93C" # Archive Automatic Signing Key (2018)

# Ubuntu 22.04 (jammy): the oldest base of Triton's images, glibc 2.35; the exec preStop hook
# (`install`'s copy) runs in Triton's container, so that is the glibc it must run on. Debian has
# no release with glibc 2.35 (bullseye 2.31, bookworm 2.36), and the binary does not run on
# bullseye (it needs GLIBC_2.34: built on bookworm). minbase: a shell, for `ldd --version`.
oldglibc() {
  local k; k="$(key oldglibc jammy "$UBUNTU_MIRROR" "$UBUNTU_KEYRING_SHA256")"
  local ref="$STANDIN_REPO/ubuntu-jammy:$k"
  if ! podman image exists "$ref"; then
    local t0=$SECONDS d="$IMAGE_WORK/jammy-$k"
    rm -rf "$d"; mkdir -p "$d/keyring" "$d/gnupg"
    log "making $ref (mmdebstrap jammy minbase from $UBUNTU_MIRROR)"
    curl -fsS -m 60 -o "$d/keyring.deb" "$UBUNTU_MIRROR/$UBUNTU_KEYRING_DEB"
    if [[ "$(sha256sum "$d/keyring.deb" | cut -d' ' -f1)" != "$UBUNTU_KEYRING_SHA256" ]]; then
      log "$UBUNTU_KEYRING_DEB does not have the pinned sha256"; return 1
    fi
    dpkg-deb -x "$d/keyring.deb" "$d/keyring"
    local kr="$d/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg"
    if ! gpg --homedir "$d/gnupg" --show-keys --with-colons "$kr" 2>/dev/null | grep -q "^fpr:*$UBUNTU_ARCHIVE_KEY:"; then
      log "$kr lacks the archive key $UBUNTU_ARCHIVE_KEY"; return 1
    fi
    mmdebstrap_q --variant=minbase --keyring="$kr" --components=main \
      jammy "$d/rootfs.tar" "$UBUNTU_MIRROR"
    podman import -q "$d/rootfs.tar" "$ref" >/dev/null
    rm -rf "$d"
    prune_others ubuntu-jammy "$k"
    log "made $ref in $((SECONDS - t0)) s"
  fi
  echo "$ref"
}

case "${1:-}" in
  runtime|builder|oldglibc|rust_base) "$1" ;;
  *) echo "usage: $0 runtime|builder|oldglibc" >&2; exit 2 ;;
esac
