#!/usr/bin/env bash
# Checks deploy/docker/Dockerfile without a Docker engine (none runs on the
# development machines or in CI): it reads the Dockerfile and runs its
# builder stage outside Docker, the way `docker build` would.
#
#   1. Parses the Dockerfile (stages, ARG/ENV/WORKDIR/COPY/RUN, line
#      continuations) and checks the final stage: a distroless base of the
#      same Debian release as the builder, no RUN (no shell there), no
#      HEALTHCHECK, a numeric non-root USER, EXPOSE 9929, the documented
#      ENTRYPOINT and CMD, and nothing copied from the build context (config
#      and secrets are mounted, never baked in).
#   2. Applies /.dockerignore to the repository as Docker does and checks that
#      every COPY source of the builder stage exists and is in the context.
#   3. Copies exactly those files into a temporary root (WORKDIR and COPY
#      destinations mapped under it) and runs the builder stage's RUN
#      commands there with its ARG and ENV values (--mount flags dropped,
#      the stage's own absolute paths mapped under the temporary root).
#      CARGO_TARGET_DIR is the caller's (default: the repository's target/),
#      so only the crate itself recompiles: under a minute when the release
#      dependencies are built, a full release build otherwise.
#   4. Checks that every file the final stage copies from the builder was
#      produced, that the ENTRYPOINT binary runs `--version` on this machine
#      and reports the revision passed as HSS_SWR_REVISION, and that it needs
#      no shared library and no glibc symbol version the runtime base
#      (distroless/cc-debian12: glibc 2.36, libgcc_s) does not carry.
#
# Usage: deploy/docker/check-build.sh     (from anywhere; exit 0 when all pass)
# Env:   CARGO_TARGET_DIR   target directory to reuse (default: <repo>/target)
#        CHECK_BUILD_KEEP=1 keep the temporary root and print its path
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CHECK_BUILD_REPO=$repo
export CHECK_BUILD_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
case "$CHECK_BUILD_TARGET_DIR" in /*) ;; *) CHECK_BUILD_TARGET_DIR=$PWD/$CHECK_BUILD_TARGET_DIR ;; esac
CHECK_BUILD_REVISION=unknown
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  CHECK_BUILD_REVISION=$(git -C "$repo" rev-parse --short=12 HEAD)
fi
export CHECK_BUILD_REVISION
work=$(mktemp -d "${TMPDIR:-/tmp}/check-build.XXXXXX")
export CHECK_BUILD_WORK=$work
if [ "${CHECK_BUILD_KEEP:-}" = 1 ]; then
  echo "check-build: keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi

for tool in python3 cargo readelf; do
  command -v "$tool" >/dev/null || { echo "check-build: $tool is required" >&2; exit 1; }
done

python3 - <<'PY'
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.environ["CHECK_BUILD_REPO"]
WORK = os.environ["CHECK_BUILD_WORK"]
TARGET_DIR = os.environ["CHECK_BUILD_TARGET_DIR"]
REVISION = os.environ["CHECK_BUILD_REVISION"]
DOCKERFILE = os.path.join(REPO, "deploy/docker/Dockerfile")
DOCKERIGNORE = os.path.join(REPO, ".dockerignore")
ROOT = os.path.join(WORK, "root")  # the builder stage's filesystem

# What the runtime image must look like (README "Deployment", issue 5).
ENTRYPOINT = ["/hss-swr-exporter"]
CMD = ["--config.file=/etc/hss-swr-exporter/config.yml"]
PORT = "9929"
# Shared objects that gcr.io/distroless/cc-debian12 provides (glibc, libgcc_s, libstdc++).
RUNTIME_LIBS = {
    "libc.so.6", "libm.so.6", "libgcc_s.so.1", "libpthread.so.0", "libdl.so.2",
    "librt.so.1", "libutil.so.1", "libstdc++.so.6",
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}
RUNTIME_GLIBC = (2, 36)  # Debian 12
DEBIAN_RELEASE = {"bookworm": "12", "trixie": "13", "bullseye": "11"}

failures = []


def ok(msg):
    print(f"  ok  {msg}")


def fail(msg):
    print(f"  FAIL {msg}")
    failures.append(msg)


def die(msg):
    print(f"check-build: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------- parsing --

def logical_lines(text):
    """Dockerfile instructions: continuations joined, comments dropped."""
    out, buf, start = [], [], None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment inside a continued instruction
        if start is None:
            start = number
        if line.endswith("\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        out.append((start, " ".join(part.strip() for part in buf)))
        buf, start = [], None
    if buf:
        out.append((start, " ".join(part.strip() for part in buf)))
    return out


def expand(value, variables):
    def sub(match):
        name = match.group(1) or match.group(2)
        return variables.get(name, "")
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, value)


def split_flags(args):
    """Leading --flag=value options of COPY/RUN, and the rest."""
    flags, rest = {}, args
    while True:
        match = re.match(r"--([\w-]+)(?:=(\S+))?\s+", rest)
        if not match:
            return flags, rest
        flags.setdefault(match.group(1), []).append(match.group(2) or "")
        rest = rest[match.end():]


def json_or_shell(args):
    args = args.strip()
    if args.startswith("["):
        import json
        try:
            return json.loads(args), True
        except ValueError:
            pass
    return shlex.split(args), False


with open(DOCKERFILE, encoding="utf-8") as f:
    instructions = logical_lines(f.read())

global_args, stages = {}, []
for number, line in instructions:
    keyword, _, args = line.partition(" ")
    keyword, args = keyword.upper(), args.strip()
    if keyword == "FROM":
        flags, rest = split_flags(args + " ")
        words = rest.split()
        stage = {
            "line": number,
            "image": expand(words[0], global_args),
            "name": words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages)),
            "steps": [],
        }
        stages.append(stage)
    elif not stages:
        if keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        else:
            die(f"Dockerfile line {number}: {keyword} before the first FROM")
    else:
        stages[-1]["steps"].append((number, keyword, args))

if len(stages) < 2:
    die("the Dockerfile must have a builder stage and a runtime stage")
final = stages[-1]
by_name = {s["name"]: s for s in stages}

print("Dockerfile: static checks")
# The final stage: what runs in production.
copies_from = []
user = entrypoint = cmd = None
exposed = set()
for number, keyword, args in final["steps"]:
    if keyword == "RUN":
        fail(f"line {number}: RUN in the runtime stage (distroless has no shell)")
    elif keyword == "ADD":
        fail(f"line {number}: ADD in the runtime stage; use COPY --from")
    elif keyword == "COPY":
        flags, rest = split_flags(args + " ")
        words, _ = json_or_shell(rest)
        if "from" not in flags:
            fail(f"line {number}: the runtime stage copies {words[:-1]} from the build context "
                 "(configuration and secrets are mounted, never baked in)")
            continue
        for src in words[:-1]:
            copies_from.append((number, flags["from"][0], src, words[-1], flags.get("chown", [""])[0]))
    elif keyword == "USER":
        user = args
    elif keyword == "EXPOSE":
        exposed.update(p.split("/")[0] for p in args.split())
    elif keyword == "ENTRYPOINT":
        entrypoint = json_or_shell(args)
    elif keyword == "CMD":
        cmd = json_or_shell(args)
for stage in stages:
    for number, keyword, args in stage["steps"]:
        if keyword == "HEALTHCHECK":
            fail(f"line {number}: HEALTHCHECK (probes belong to the orchestrator)")
        if keyword in ("ENV", "ARG") and re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|SK)\b", args.split("=")[0], re.I):
            fail(f"line {number}: {keyword} {args.split('=')[0]} looks like a credential")

final_image = final["image"]
builder_names = {c[1] for c in copies_from}
if len(builder_names) != 1 or next(iter(builder_names)) not in by_name:
    die(f"the runtime stage must copy from exactly one earlier stage, found {sorted(builder_names)}")
builder = by_name[next(iter(builder_names))]
builder_image = builder["image"]

match = re.match(r"gcr\.io/distroless/(cc|base|static)-debian(\d+)(:[\w.-]+)?(@sha256:[0-9a-f]{64})?$", final_image)
if match:
    ok(f"runtime base {final_image}")
    runtime_debian = match.group(2)
else:
    fail(f"runtime base {final_image} is not a distroless Debian image")
    runtime_debian = None
match = re.match(r"rust:(\d+(?:\.\d+)*)-(\w+)$", builder_image)
if match and DEBIAN_RELEASE.get(match.group(2)) == runtime_debian:
    ok(f"builder base {builder_image}: same Debian release as the runtime (glibc)")
    builder_rust = match.group(1)
else:
    fail(f"builder base {builder_image} does not match the runtime's Debian {runtime_debian}")
    builder_rust = None

if user is None:
    fail("no USER in the runtime stage (it would run as root)")
else:
    uid = user.split(":")[0]
    if not uid.isdigit():
        fail(f"USER {user} is not numeric (Kubernetes runAsNonRoot cannot verify a name)")
    elif uid == "0":
        fail("USER 0 is root")
    else:
        ok(f"runs as uid {uid}")
        for number, _, src, _, chown in copies_from:
            if chown and chown.split(":")[0] != uid:
                fail(f"line {number}: --chown={chown} is not the runtime user {user}")
if PORT in exposed:
    ok(f"EXPOSE {PORT}")
else:
    fail(f"no EXPOSE {PORT}")
if entrypoint == (ENTRYPOINT, True):
    ok(f"ENTRYPOINT {ENTRYPOINT}")
else:
    fail(f"ENTRYPOINT is {entrypoint}, expected exec form {ENTRYPOINT}")
if cmd == (CMD, True):
    ok(f"CMD {CMD}")
else:
    fail(f"CMD is {cmd}, expected exec form {CMD}")
binary_dest = ENTRYPOINT[0]
binary_src = next((src for _, _, src, dest, _ in copies_from
                   if dest == binary_dest or (dest.endswith("/") and dest + os.path.basename(src) == binary_dest)), None)
if binary_src is None:
    fail(f"the runtime stage copies nothing to the ENTRYPOINT {binary_dest}")

# --------------------------------------------------------- .dockerignore --

def pattern_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif c == "*":
            out += "[^/]*"
            i += 1
        elif c == "?":
            out += "[^/]"
            i += 1
        elif c == "[":
            end = pattern.find("]", i)
            out += pattern[i:end + 1] if end > i else re.escape(c)
            i = end + 1 if end > i else i + 1
        else:
            out += re.escape(c)
            i += 1
    return re.compile(out + r"\Z")


patterns = []
if os.path.exists(DOCKERIGNORE):
    with open(DOCKERIGNORE, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            patterns.append((negate, line, pattern_regex(line)))


def ignored(rel):
    """Docker's rule: the last pattern matching the path or a parent wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negate, _, regex in patterns:
        if any(regex.match(p) for p in prefixes):
            result = not negate
    return result


def may_reinclude(rel_dir):
    for negate, text, _ in patterns:
        if negate and (text.startswith(rel_dir + "/") or text == rel_dir
                       or re.search(r"[*?\[]", text.split("/")[0])):
            return True
    return False


def context_files(rel):
    """The files of `rel` (a file or directory) that the build context holds."""
    top = os.path.join(REPO, rel)
    if os.path.isfile(top) or os.path.islink(top):
        return [] if ignored(rel) else [rel]
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        reldir = os.path.relpath(dirpath, REPO)
        dirnames[:] = sorted(d for d in dirnames
                             if not (ignored(f"{reldir}/{d}") and not may_reinclude(f"{reldir}/{d}")))
        for name in sorted(filenames):
            path = f"{reldir}/{name}" if reldir != "." else name
            if not ignored(path):
                found.append(path)
    return found


for bad in (".git", "target"):
    if os.path.exists(os.path.join(REPO, bad)) and not ignored(bad):
        fail(f".dockerignore does not leave out {bad}/")
if not failures:
    ok(".dockerignore leaves out .git/ and target/")

# ----------------------------------------------------- run the builder --

print(f"builder stage '{builder['name']}' ({builder_image}) outside Docker, in {ROOT}")
own_dirs = set()
for number, keyword, args in builder["steps"]:
    if keyword == "WORKDIR":
        own_dirs.add(args.strip().strip("/").split("/")[0])
for _, _, src, _, _ in copies_from:
    own_dirs.add(src.strip("/").split("/")[0])
own_re = re.compile(r"(?<![\w./$}-])/(" + "|".join(map(re.escape, sorted(own_dirs))) + r")(?=/|\b)")


def to_root(text):
    """The stage's own absolute paths (WORKDIR, /out, ...) under ROOT."""
    return own_re.sub(lambda m: ROOT + "/" + m.group(1), text)


variables = dict(global_args)
variables["HSS_SWR_REVISION"] = REVISION  # --build-arg, as the README's build command passes it
env = dict(os.environ)
env.pop("CARGO_TARGET_DIR", None)
workdir = "/"
os.makedirs(ROOT)
ran = 0
for number, keyword, args in builder["steps"]:
    if keyword == "WORKDIR":
        workdir = os.path.normpath(os.path.join(workdir, expand(args.strip(), variables)))
        os.makedirs(ROOT + workdir, exist_ok=True)
    elif keyword == "ARG":
        name, has_default, default = args.partition("=")
        name = name.strip()
        if name in variables:
            env[name] = variables[name]
        elif has_default:
            variables[name] = env[name] = expand(default.strip().strip('"'), variables)
    elif keyword == "ENV":
        for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
            value = expand(value.strip('"'), variables)
            variables[name] = value
            env[name] = TARGET_DIR if name == "CARGO_TARGET_DIR" else to_root(value)
    elif keyword in ("COPY", "ADD"):
        flags, rest = split_flags(args + " ")
        if keyword == "ADD" or "from" in flags:
            fail(f"line {number}: {keyword} {args}: the builder should COPY from the context only")
            continue
        words, _ = json_or_shell(rest)
        sources, dest = words[:-1], words[-1]
        dest_abs = os.path.normpath(os.path.join(workdir, dest))
        for src in sources:
            src = os.path.normpath(src).lstrip("/")
            if not os.path.exists(os.path.join(REPO, src)):
                fail(f"line {number}: COPY source {src} does not exist in the repository")
                continue
            files = context_files(src)
            if not files:
                fail(f"line {number}: COPY source {src} is left out by .dockerignore")
                continue
            if os.path.isdir(os.path.join(REPO, src)):
                base_dest = dest_abs
                for rel in files:
                    target = ROOT + os.path.join(base_dest, os.path.relpath(rel, src))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy2(os.path.join(REPO, rel), target)
            else:
                into_dir = dest.endswith("/") or len(sources) > 1
                target = ROOT + (os.path.join(dest_abs, os.path.basename(src)) if into_dir else dest_abs)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(os.path.join(REPO, src), target)
            ok(f"line {number}: COPY {src} ({len(files)} file{'s' if len(files) != 1 else ''} in the context)")
    elif keyword == "RUN":
        if failures:
            break
        _, command = split_flags(args + " ")
        command = to_root(command.strip())
        print(f"  run (line {number}): {command}")
        print(f"       CARGO_TARGET_DIR={env.get('CARGO_TARGET_DIR', '(unset)')} HSS_SWR_REVISION={env.get('HSS_SWR_REVISION', '(unset)')}")
        started = time.monotonic()
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=ROOT + workdir, env=env)
        if done.returncode != 0:
            fail(f"line {number}: RUN exited with {done.returncode}")
            break
        ran += 1
        ok(f"line {number}: RUN finished in {time.monotonic() - started:.0f}s")
    elif keyword in ("LABEL", "USER", "EXPOSE", "SHELL", "STOPSIGNAL", "ONBUILD", "VOLUME"):
        pass
    else:
        fail(f"line {number}: {keyword} in the builder stage is not understood by this check")

if ran == 0 and not failures:
    fail("the builder stage has no RUN step")

# ------------------------------------------------------- the artefacts --

if not failures:
    print("runtime stage: what it copies from the builder")
    for number, _, src, dest, _ in copies_from:
        path = ROOT + src
        if os.path.exists(path):
            ok(f"line {number}: {src} -> {dest} was produced")
        else:
            fail(f"line {number}: COPY --from={builder['name']} {src}: the builder did not produce it")

if not failures and binary_src:
    binary = ROOT + binary_src
    if not os.access(binary, os.X_OK):
        fail(f"{binary_src} is not executable")
    else:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True)
        line = (version.stdout or version.stderr).strip()
        if version.returncode == 0 and f"revision: {REVISION})" in line.partition("\n")[0]:
            ok(f"ENTRYPOINT {binary_dest} --version: {line}")
        else:
            fail(f"{binary_dest} --version exited {version.returncode}: {line!r} "
                 f"(expected the revision {REVISION} from HSS_SWR_REVISION)")
        dynamic = subprocess.run(["readelf", "--dynamic", "--wide", binary], capture_output=True, text=True)
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic.stdout))
        missing = needed - RUNTIME_LIBS
        if missing:
            fail(f"the binary needs {sorted(missing)}, which {final_image} does not carry")
        else:
            ok(f"shared libraries {sorted(needed) or 'none (static)'} are all in {final_image}")
        symbols = subprocess.run(["readelf", "--dyn-syms", "--wide", binary], capture_output=True, text=True)
        versions = {tuple(int(x) for x in v.split(".")) for v in re.findall(r"@GLIBC_(\d+(?:\.\d+)+)", symbols.stdout)}
        newest = max(versions, default=(0,))
        if newest > RUNTIME_GLIBC:
            fail(f"the binary needs glibc {'.'.join(map(str, newest))}, Debian {runtime_debian} has "
                 f"{'.'.join(map(str, RUNTIME_GLIBC))}")
        else:
            ok(f"newest glibc symbol version needed: {'.'.join(map(str, newest))} "
               f"(runtime has {'.'.join(map(str, RUNTIME_GLIBC))})")

rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.split()
if builder_rust and len(rustc) > 1 and not rustc[1].startswith(builder_rust + "."):
    print(f"  note: the builder pins Rust {builder_rust}, this machine built with rustc {rustc[1]}")

if failures:
    print(f"check-build: {len(failures)} problem(s)")
    sys.exit(1)
print("check-build: the Dockerfile's builder stage builds the binary its runtime stage runs")
PY
