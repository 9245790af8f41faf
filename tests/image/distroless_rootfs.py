"""Cut a distroless-like root filesystem out of a full Debian one (tests/image/standins.sh).

    python3 distroless_rootfs.py FULL_ROOTFS OUT.tar PACKAGE...

FULL_ROOTFS is an mmdebstrap'ed Debian (in a directory) where PACKAGE... are installed. OUT.tar
gets only the files dpkg lists for those packages, plus what distroless adds itself: the CA
bundle that ca-certificates' postinst generated, /etc/passwd and /etc/group with root, nobody and
nonroot (65532), /etc/nsswitch.conf, /tmp (1777) and the home directories. No shell, no dpkg, no
apt: like gcr.io/distroless/cc-debian12, so the agent's image is tested without a shell to fall
back on.

Why not mmdebstrap's `custom` or `extract` variants: installing ca-certificates and tzdata runs
maintainer scripts that need a shell, perl and openssl (which would then stay in the image), and
an extract-only tree lacks the CA bundle that the postinst generates.
"""
import io
import os
import sys
import tarfile
import time

FULL, OUT, PACKAGES = sys.argv[1], sys.argv[2], sys.argv[3:]
if not PACKAGES:
    sys.exit("usage: distroless_rootfs.py FULL_ROOTFS OUT.tar PACKAGE...")

# The merged-/usr links (bin -> usr/bin, lib64 -> usr/lib64, ...) belong to no package, yet the
# ELF interpreter path /lib64/ld-linux-x86-64.so.2 goes through one of them.
TOP_LINKS = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
GENERATED = ["etc/ssl/certs/ca-certificates.crt", "etc/localtime", "etc/timezone"]


def list_file(pkg):
    info = os.path.join(FULL, "var/lib/dpkg/info")
    for name in (f"{pkg}.list", f"{pkg}:amd64.list", f"{pkg}:arm64.list", f"{pkg}:all.list"):
        if os.path.exists(os.path.join(info, name)):
            return os.path.join(info, name)
    sys.exit(f"distroless_rootfs: package {pkg} is not installed in {FULL}")


def canonical(rel):
    """The path with its directories resolved inside FULL (lib/x -> usr/lib/x); the last
    component is kept, so a listed symlink stays a symlink."""
    parent, base = os.path.split(rel)
    real_parent = os.path.realpath(os.path.join(FULL, parent))
    root = os.path.realpath(FULL)
    if real_parent != root and not real_parent.startswith(root + os.sep):
        sys.exit(f"distroless_rootfs: {rel} resolves outside the root filesystem")
    return os.path.relpath(os.path.join(real_parent, base), root)


wanted = set()
for pkg in PACKAGES:
    with open(list_file(pkg)) as f:
        for line in f:
            rel = line.strip().lstrip("/")
            if rel and os.path.lexists(os.path.join(FULL, rel)):
                wanted.add(canonical(rel))
for rel in TOP_LINKS:
    if os.path.islink(os.path.join(FULL, rel)):
        wanted.add(rel)
for rel in GENERATED:
    if os.path.lexists(os.path.join(FULL, rel)):
        wanted.add(canonical(rel))
# Every parent directory, so that the tar is complete on its own.
for rel in list(wanted):
    p = os.path.dirname(rel)
    while p:
        wanted.add(p)
        p = os.path.dirname(p)
wanted.discard(".")

now = int(time.time())


def add_text(tar, name, text, mode=0o644):
    data = text.encode()
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, now
    tar.addfile(ti, io.BytesIO(data))


def add_dir(tar, name, mode, uid=0):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.DIRTYPE, mode, uid, uid, now
    tar.addfile(ti)


def root_owned(ti):
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


skip = {"etc/passwd", "etc/group", "etc/nsswitch.conf", "tmp", "root", "home"}
with tarfile.open(OUT, "w", format=tarfile.PAX_FORMAT) as tar:
    # Sorted: a directory comes before what it holds.
    for rel in sorted(wanted):
        if rel in skip:
            continue
        tar.add(os.path.join(FULL, rel), arcname=rel, recursive=False, filter=root_owned)
    # distroless's /etc/passwd and /etc/group (base-files ships no such files in Debian; the
    # nonroot user is distroless's own, 65532).
    add_text(tar, "etc/passwd",
             "root:x:0:0:root:/root:/sbin/nologin\n"
             "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
             "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    add_text(tar, "etc/group", "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")
    add_text(tar, "etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")
    add_dir(tar, "tmp", 0o1777)
    add_dir(tar, "root", 0o700)
    add_dir(tar, "home", 0o755)
    add_dir(tar, "home/nonroot", 0o700, uid=65532)

with tarfile.open(OUT) as tar:
    names = tar.getnames()
print(f"distroless_rootfs: {len(names)} entries from {len(PACKAGES)} packages -> {OUT}")
