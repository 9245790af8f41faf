#!/usr/bin/env bash
# Real-GPU check: compares what triton-sidecar reads through NVML with nvidia-smi.
#
# Runs only on a machine with an NVIDIA driver. That machine may have no Rust toolchain and no
# network, so it takes a prebuilt x86-64 binary:
#
#   tests/gpu/check.sh ./triton-sidecar
#
# It runs `$1 check --no-triton --gpu all`, reads its GPU lines, which look like
#   gpu uuid=<UUID> name="<NAME>" util=<ratio|NA> mem_used_bytes=<N|NA> mem_total_bytes=<N|NA> power_w=<x|NA> temp_c=<x|NA>
# (src/gpu/mod.rs, format_gpu_line), and compares memory per UUID against
#   nvidia-smi --query-gpu=uuid,memory.used,memory.total --format=csv,noheader,nounits
# It fails when memory total differs by more than 1 MiB (nvidia-smi rounds to MiB), or memory used
# by more than max(5 %, 64 MiB) (memory moves between the two reads), or when a GPU is missing on
# either side. Utilization is printed side by side, never compared: the two tools sample it at
# different moments. MIG-enabled GPUs answer NotSupported for utilization, printed as NA.
#
# Environment: NVIDIA_SMI (default nvidia-smi) and CHECK_ARGS (default "--no-triton --gpu all")
# override the commands, e.g. CHECK_ARGS="--no-triton --gpu all --nvml-lib /usr/lib64/libnvidia-ml.so.1".
# Exit status: 0 all match, 1 a mismatch, 2 usage or a command failed.
set -u

bin=${1:-}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "usage: $0 PATH/TO/triton-sidecar" >&2
    exit 2
fi
smi=${NVIDIA_SMI:-nvidia-smi}
read -r -a check_args <<<"${CHECK_ARGS:---no-triton --gpu all}"

if ! smi_out=$("$smi" --query-gpu=uuid,memory.used,memory.total,utilization.gpu,name,driver_version \
        --format=csv,noheader,nounits 2>&1); then
    echo "nvidia-smi failed:" >&2
    echo "$smi_out" >&2
    exit 2
fi
if ! check_out=$("$bin" check "${check_args[@]}" 2>&1); then
    echo "$bin check ${check_args[*]} failed:" >&2
    echo "$check_out" >&2
    exit 2
fi

echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host:    $(uname -n) $(uname -m)"
echo "gpus:    $(echo "$smi_out" | awk -F', *' '{print $5}' | sort | uniq -c | awk '{$1=$1" x"; print}' | paste -sd ';' -)"
echo "driver:  $(echo "$smi_out" | awk -F', *' 'NR==1{print $6}')"
echo "agent:   $("$bin" --version 2>/dev/null || echo unknown)"
echo "source:  $(echo "$check_out" | grep -i 'source' | head -n1)"
echo

# Both outputs go to one awk program: lines tagged S (nvidia-smi) and C (the agent's GPU lines).
{
    echo "$smi_out" | sed 's/^/S /'
    echo "$check_out" | grep '^gpu uuid=' | sed 's/^/C /'
} | awk '
function abs(x) { return x < 0 ? -x : x }
function max(a, b) { return a > b ? a : b }
$1 == "S" {
    line = substr($0, 3)
    n = split(line, f, /, */)
    u = f[1]
    smi_used[u] = f[2]; smi_total[u] = f[3]; smi_util[u] = f[4]
    uuids[u] = 1
    next
}
$1 == "C" {
    line = substr($0, 3)
    # Drop the quoted name, which may hold spaces, then read key=value tokens.
    sub(/ name="([^"\\]|\\.)*"/, "", line)
    n = split(line, t, / +/)
    split("", kv)
    for (i = 1; i <= n; i++) {
        eq = index(t[i], "=")
        if (eq == 0) continue
        k = substr(t[i], 1, eq - 1); v = substr(t[i], eq + 1)
        kv[k] = v
    }
    u = kv["uuid"]
    ag_used[u] = kv["mem_used_bytes"]; ag_total[u] = kv["mem_total_bytes"]; ag_util[u] = kv["util"]
    ag_seen[u] = 1
    uuids[u] = 1
    next
}
END {
    MiB = 1048576
    fail = 0
    count = 0
    for (u in uuids) count++
    if (count == 0) { print "FAIL: no GPU seen by nvidia-smi or the agent"; exit 1 }
    printf "%-42s %12s %12s %8s %12s %12s %8s %9s %9s  %s\n", "uuid", "used(smi)", "used(agent)", "d_used", "total(smi)", "total(agent)", "d_total", "util(smi)", "util(ag)", "result"
    for (u in uuids) {
        res = "ok"
        if (!(u in smi_used)) { res = "FAIL: not in nvidia-smi"; fail = 1 }
        else if (!(u in ag_seen)) { res = "FAIL: not reported by the agent"; fail = 1 }
        else if (ag_used[u] == "NA" || ag_total[u] == "NA") { res = "FAIL: agent has no memory reading"; fail = 1 }
        seen = (u in ag_seen)
        insmi = (u in smi_used)
        au = (seen && ag_used[u] != "NA") ? ag_used[u] / MiB : -1
        at = (seen && ag_total[u] != "NA") ? ag_total[u] / MiB : -1
        du = (au >= 0 && insmi) ? au - smi_used[u] : 0
        dt = (at >= 0 && insmi) ? at - smi_total[u] : 0
        if (res == "ok") {
            tol = max(0.05 * smi_used[u], 64)
            if (abs(dt) > 1) { res = sprintf("FAIL: total differs by %.1f MiB (> 1)", dt); fail = 1 }
            else if (abs(du) > tol) { res = sprintf("FAIL: used differs by %.1f MiB (> %.0f)", du, tol); fail = 1 }
        }
        s_used = insmi ? smi_used[u] : "-"
        s_total = insmi ? smi_total[u] : "-"
        s_util = insmi ? ((smi_util[u] ~ /^[0-9.]+$/) ? smi_util[u] "%" : smi_util[u]) : "-"
        a_used = (au >= 0) ? sprintf("%.1f", au) : "-"
        a_total = (at >= 0) ? sprintf("%.1f", at) : "-"
        a_util = "-"
        if (seen) a_util = (ag_util[u] == "NA") ? "NA" : sprintf("%.0f%%", ag_util[u] * 100)
        printf "%-42s %12s %12s %8.1f %12s %12s %8.1f %9s %9s  %s\n", u, s_used, a_used, du, s_total, a_total, dt, s_util, a_util, res
    }
    printf "\n(memory in MiB; utilization is shown, not compared)\n"
    exit fail
}'
rc=$?
echo
if [ "$rc" -eq 0 ]; then
    echo "PASS: memory matches nvidia-smi for every GPU"
else
    echo "FAIL: see the table above"
    echo "--- agent output ---"
    echo "$check_out"
fi
exit "$rc"
