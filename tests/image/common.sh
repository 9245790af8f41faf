# tests/image/common.sh: shared by run.sh and standins.sh (sourced, not run).
#
# Podman on this kind of machine (cgroup v1, no systemd): the default OCI runtime crun fails on
# its cgroups, so every container runs with runc. Limits are given explicitly because runc
# cannot raise them above what conmon holds: podman caps its own RLIMIT_NPROC at 32768 (seen
# in conmon's /proc/PID/limits), so passing the shell's hard limit (96365 here) fails with
# "error setting rlimit type 6: operation not permitted". `--network host`: a container's own
# network namespace needs netavark/CNI set-up that this machine does not allow; every server a
# test starts binds 127.0.0.1 only, so host networking exposes nothing.

IMAGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE_HERE="$IMAGE_ROOT/tests/image"
# Scratch space for stand-in root filesystems and build contexts (ignored by git).
IMAGE_WORK="${IMAGE_WORK:-$IMAGE_ROOT/target/image}"
# The Debian mirror mmdebstrap reads (the machine's own apt sources point at it too).
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Ubuntu's archive, for the Ubuntu 22.04 rootfs that stands in for Triton's container.
UBUNTU_MIRROR="${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}"
STANDIN_REPO="localhost/triton-sidecar-standin"

_limit() { # hard-limit cap: the smaller of the two, "unlimited" counts as the cap
  local hard="$1" cap="$2"
  if [[ "$hard" == unlimited || "$hard" -gt "$cap" ]]; then echo "$cap"; else echo "$hard"; fi
}
# 4096 processes per uid is far above what the agent (two worker threads) or cargo on this
# machine start; 65536 open files is the usual container default.
IMAGE_NPROC="$(_limit "$(ulimit -Hu)" 4096)"
IMAGE_NOFILE="$(_limit "$(ulimit -Hn)" 65536)"
PODMAN_FLAGS=(--runtime runc --network host
  --ulimit "nofile=$IMAGE_NOFILE:$IMAGE_NOFILE" --ulimit "nproc=$IMAGE_NPROC:$IMAGE_NPROC")
