#!/usr/bin/env bash
# Checks deploy/systemd/ with the built binary:
#   1. systemd-analyze verify on the unit (ExecStart pointed at the built
#      binary); any message, warnings included, fails the check;
#   2. systemd-analyze security --offline: the exposure score must stay at or
#      below $MAX_EXPOSURE;
#   3. check-config on deploy/systemd/config.yml, with $CREDENTIALS_DIRECTORY
#      holding a secret file as LoadCredential= would;
#   4. the sandbox: runs check-config and the daemon (against the built-in
#      simulator, until every scope has run and /metrics, /status and / were
#      served, then SIGHUP as ExecReload= sends it, then SIGTERM as
#      `systemctl stop` does) under strace, and fails if the binary makes a
#      system call that the unit's SystemCallFilter= denies, opens a socket
#      of a family RestrictAddressFamilies= denies, maps writable executable
#      memory (MemoryDenyWriteExecute=), writes outside the state directory
#      (ProtectSystem=strict) or touches /root or /home (ProtectHome=). The
#      allowed sets are read from the unit and expanded by systemd-analyze
#      syscall-filter.
# Steps 1, 2 and 4 need systemd-analyze (Debian package systemd), step 4
# strace; each is skipped with a message when its tool cannot run here.
#
# Usage: deploy/systemd/check-unit.sh
# Env:   HSS_SWR_EXPORTER_BIN  the binary (default: ${CARGO_TARGET_DIR:-target}/release/hss-swr-exporter)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
unit=$repo/deploy/systemd/hss-swr-exporter.service
config=$repo/deploy/systemd/config.yml
target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin=${HSS_SWR_EXPORTER_BIN:-$target_dir/release/hss-swr-exporter}
case "$bin" in /*) ;; *) bin=$PWD/$bin ;; esac
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}

[ -x "$bin" ] || { echo "check-unit: no binary at $bin (run cargo build --release or deploy/docker/check-build.sh)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/check-unit.XXXXXX")
trap 'rm -rf "$work"' EXIT

installed_path=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[ -n "$installed_path" ] || { echo "check-unit: no ExecStart= in $unit" >&2; exit 1; }

have_analyze=no
if command -v systemd-analyze >/dev/null && systemd-analyze --version >/dev/null 2>&1; then
  have_analyze=yes
fi

# 1. systemd-analyze verify: the unit as installed, but with the binary that was built.
if [ "$have_analyze" = yes ]; then
  sed "s#$installed_path#$bin#g" "$unit" >"$work/hss-swr-exporter.service"
  if ! out=$(systemd-analyze verify --man=no "$work/hss-swr-exporter.service" 2>&1) || [ -n "$out" ]; then
    echo "${out//$work\//}"
    echo "check-unit: systemd-analyze verify reported the above" >&2
    exit 1
  fi
  echo "  ok  systemd-analyze verify: no messages"

  # 2. Exposure score.
  if out=$(systemd-analyze security --offline=true --threshold="${MAX_EXPOSURE/./}" \
        "$work/hss-swr-exporter.service" 2>&1); then
    echo "  ok  systemd-analyze security: $(echo "$out" | grep -o 'Overall exposure level.*' | sed 's/\x1b\[[0-9;]*m//g')"
  else
    echo "$out" | grep -E '^✗|Overall' | sed 's/\x1b\[[0-9;]*m//g' | head -40
    echo "check-unit: exposure above $MAX_EXPOSURE" >&2
    exit 1
  fi
else
  echo "  SKIP systemd-analyze verify/security: systemd-analyze is not installed or cannot run here (apt-get install systemd)"
fi

# 3. The shipped configuration, with the credential directory systemd would provide.
mkdir -p "$work/credentials" "$work/state"
printf 'check-secret\n' >"$work/credentials/hss-secret-key"
CREDENTIALS_DIRECTORY=$work/credentials "$bin" check-config --config.file "$config" >/dev/null
echo "  ok  check-config deploy/systemd/config.yml (secret_key_file from \$CREDENTIALS_DIRECTORY)"

# 4. The sandbox against what the binary really does.
if [ "$have_analyze" != yes ]; then
  echo "  SKIP sandbox check: systemd-analyze is needed to expand the system call groups"
  exit 0
fi
if ! command -v strace >/dev/null || ! strace -f -o /dev/null true >/dev/null 2>&1; then
  echo "  SKIP sandbox check: strace is not installed or cannot trace here (apt-get install strace)"
  exit 0
fi
systemd-analyze syscall-filter >"$work/groups.txt" 2>/dev/null
export CHECK_UNIT_BIN=$bin CHECK_UNIT_WORK=$work CHECK_UNIT_UNIT=$unit CHECK_UNIT_CONFIG=$config
python3 - <<'PY'
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

BIN = os.environ["CHECK_UNIT_BIN"]
WORK = os.environ["CHECK_UNIT_WORK"]
UNIT = os.environ["CHECK_UNIT_UNIT"]
CONFIG = os.environ["CHECK_UNIT_CONFIG"]

# Groups of system calls, as this systemd knows them.
groups, current = {}, None
with open(os.path.join(WORK, "groups.txt"), encoding="utf-8") as f:
    for raw in f:
        line = raw.rstrip()
        if not line.strip() or line.strip().startswith("#"):
            continue
        if not line.startswith(" "):
            current = groups.setdefault(line.strip(), []) if line.startswith("@") else None
        elif current is not None:
            current.append(line.strip())


def expand(name, seen=()):
    if not name.startswith("@"):
        return {name}
    if name not in groups:
        sys.exit(f"check-unit: unknown system call group {name}")
    out = set()
    for item in groups[name]:
        if item not in seen:
            out |= expand(item, seen + (name,))
    return out


# SystemCallFilter= lines, in order: the first allow-list, then ~ removals.
allowed, families = None, set()
with open(UNIT, encoding="utf-8") as f:
    for raw in f:
        key, _, value = raw.strip().partition("=")
        if key == "SystemCallFilter":
            deny = value.startswith("~")
            names = set()
            for item in value.lstrip("~").split():
                names |= expand(item)
            if deny:
                allowed = (allowed or set()) - names
            else:
                allowed = names if allowed is None else allowed | names
        elif key == "RestrictAddressFamilies":
            families = set(value.split())
if not allowed:
    sys.exit("check-unit: the unit has no SystemCallFilter= allow-list")

# The simulator (not traced) and a configuration derived from the shipped one.
sim_log = open(os.path.join(WORK, "sim.log"), "w")
sim = subprocess.Popen([BIN, "simulate", "--listen", "127.0.0.1:0", "--images", "3000",
                        "--namespaces", "12", "--quota", "none", "--access-key", "CHECKAK",
                        "--secret-key", "check-secret"], stdout=sim_log, stderr=subprocess.STDOUT)


def wait_for_address(path, pattern, proc, what):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(path, encoding="utf-8", errors="replace") as f:
            match = re.search(pattern, f.read())
        if match:
            return match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    with open(path, encoding="utf-8", errors="replace") as f:
        print(f.read())
    sys.exit(f"check-unit: {what} did not start")


traces = []
daemon, children = None, None
try:
    sim_addr = wait_for_address(os.path.join(WORK, "sim.log"),
                                r'msg="HSS simulator listening" address=([0-9.:]+)', sim, "the simulator")
    with open(CONFIG, encoding="utf-8") as f:
        text = f.read()
    text = text.replace("YOUR-ACCESS-KEY-ID", "CHECKAK")
    text = re.sub(r"(?m)^state_file: .*$", f"state_file: {WORK}/state/state.json", text)
    text = re.sub(r"(?m)^(\s+)project_id: (.*)$",
                  rf"\1project_id: \2\n\1endpoint: http://localhost:{sim_addr.rsplit(':', 1)[1]}", text)
    text = "api_rate_limit: 100/1s\nmalicious_interval: 2s\n" + text
    config = os.path.join(WORK, "config.yml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(text)
    env = dict(os.environ, CREDENTIALS_DIRECTORY=os.path.join(WORK, "credentials"))

    def strace(args, out):
        traces.append(out)
        return ["strace", "-f", "-qq", "-e", "signal=none", "-o", out, BIN] + args

    done = subprocess.run(strace(["check-config", "--config.file", config], os.path.join(WORK, "check.trace")),
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"check-unit: check-config under strace failed: {done.stderr}")

    daemon_log = open(os.path.join(WORK, "daemon.log"), "w")
    daemon = subprocess.Popen(strace(["--config.file", config, "--web.listen-address", "127.0.0.1:0"],
                                     os.path.join(WORK, "daemon.trace")),
                              env=env, stdout=daemon_log, stderr=subprocess.STDOUT)
    addr = wait_for_address(os.path.join(WORK, "daemon.log"),
                            r'msg="serving metrics" address=([0-9.:]+)', daemon, "the exporter")
    deadline, ready = time.monotonic() + 30, False
    while time.monotonic() < deadline and not ready:
        try:
            ready = urllib.request.urlopen(f"http://{addr}/-/ready", timeout=5).status == 200
        except OSError:
            time.sleep(0.2)
    if not ready:
        sys.exit("check-unit: the exporter did not become ready within 30 s")
    time.sleep(3)  # a few malicious-lane rounds, with state file writes

    def fetch_all():
        for path, headers in (("/metrics", {}), ("/metrics", {"Accept-Encoding": "gzip"}),
                              ("/status", {}), ("/", {}), ("/-/healthy", {})):
            with urllib.request.urlopen(urllib.request.Request(f"http://{addr}{path}", headers=headers),
                                        timeout=5) as answer:
                answer.read()

    fetch_all()
    # Signals go to the exporter itself (strace's child), as systemd sends them.
    with open(f"/proc/{daemon.pid}/task/{daemon.pid}/children", encoding="ascii") as f:
        children = [int(pid) for pid in f.read().split()]
    if len(children) != 1:
        sys.exit(f"check-unit: expected one traced process under strace, found {children}")
    exporter = children[0]
    # ExecReload's SIGHUP: the reload path (config and secret files re-read)
    # runs in the sandbox too.
    os.kill(exporter, signal.SIGHUP)
    time.sleep(2)
    if daemon.poll() is not None:
        print("  note: the binary ended on SIGHUP (it has no reload handler), so `systemctl reload` "
              "restarts it (RestartForceExitStatus=SIGHUP)")
    else:
        fetch_all()
        print("  ok  reload on SIGHUP: still serving")
        os.kill(exporter, signal.SIGTERM)
        try:
            code = daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(exporter, signal.SIGKILL)
            daemon.wait(timeout=10)
            sys.exit("check-unit: the exporter did not stop on SIGTERM within 20 s")
        if code != 0:
            sys.exit(f"check-unit: the exporter exited with {code} on SIGTERM")
finally:
    if daemon is not None and daemon.poll() is None:
        for pid in children or []:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        daemon.kill()
        daemon.wait(timeout=10)
    sim.terminate()
    sim.wait(timeout=10)

used, used_families, write_exec, writes, home = set(), set(), [], [], []
call = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)\(")
WRITING = {"open", "openat", "openat2", "creat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
           "mkdir", "mkdirat", "rmdir", "truncate", "symlink", "symlinkat", "link", "linkat", "chmod",
           "fchmodat", "chown", "fchownat", "utimensat"}
# Writable under ProtectSystem=strict: the StateDirectory (here WORK/state).
writable = (os.path.join(WORK, "state") + "/", "/dev/null")
own = (os.path.dirname(BIN) + "/", WORK + "/")
for trace in traces:
    with open(trace, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = call.match(line)
            if not match:
                continue
            name = match.group(1)
            used.add(name)
            if name == "socket":
                family = re.search(r"socket\((AF_\w+)", line)
                if family:
                    used_families.add(family.group(1))
            if name in ("mmap", "mprotect", "pkey_mprotect") and "PROT_WRITE" in line and "PROT_EXEC" in line:
                write_exec.append(line.strip())
            paths = re.findall(r'"(/[^"]*)"', line)
            if name in WRITING and (not name.startswith("open") or re.search(r"O_(WRONLY|RDWR|CREAT)", line)):
                writes += [p for p in paths if not p.startswith(writable)]
            if name != "execve":
                home += [p for p in paths if p.startswith(("/root/", "/home/")) and not p.startswith(own)]
denied = sorted(used - allowed)
bad_families = sorted(used_families - families) if families else []
if denied:
    print(f"  FAIL system calls the unit denies (SystemCallFilter=): {', '.join(denied)}")
if bad_families:
    print(f"  FAIL socket families the unit denies (RestrictAddressFamilies=): {', '.join(bad_families)}")
if write_exec:
    print(f"  FAIL writable and executable memory (MemoryDenyWriteExecute=): {write_exec[0]}")
if writes:
    print(f"  FAIL writes outside the state directory (ProtectSystem=strict): {sorted(set(writes))}")
if home:
    print(f"  FAIL access to home directories (ProtectHome=): {sorted(set(home))}")
if denied or bad_families or write_exec or writes or home:
    sys.exit(1)
print(f"  ok  sandbox: the {len(used)} system calls the daemon and check-config made are all allowed; "
      f"socket families {', '.join(sorted(used_families))}; no W+X memory; writes only in the state directory")
PY
