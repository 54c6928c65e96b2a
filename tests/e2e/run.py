#!/usr/bin/env python3
"""End-to-end test: simulator -> exporter -> a real Prometheus -> alert rules.

Starts the built-in HSS API simulator, the exporter against it, and Debian's
`prometheus` server scraping the exporter with the repository's alert rules,
then checks through Prometheus's HTTP API that:

- Prometheus scrapes the exporter and sees the detection counter;
- `HssSwrNewMaliciousImage` stays quiet while nothing new is malicious;
- it fires, within a bound, for a malicious image injected into a namespace
  the exporter has never seen, and for one injected into an existing
  namespace (the measured latencies are printed);
- `hss_swr_up` is 1 for every scope and both lanes, and the exporter drew no
  429 from the simulator (its budget equals the simulator's quota).

Prometheus scrapes the exporter as the Prometheus Operator does on
Kubernetes: the target carries the labels `namespace="hss-swr-exporter"` (the
pod's namespace), `pod`, `service`, `container` and `endpoint`, with
`honor_labels: true` (as deploy/kubernetes/servicemonitor.yaml sets). The test
checks that the namespace series, every alert expression (thresholds removed)
and every dashboard query (with the namespace variable set to one SWR
namespace) still see the SWR namespaces, never the Kubernetes one and never an
`exported_namespace` label; at the end it adds a second job with
`honor_labels: false` and prints both jobs' series side by side, asserting
that this one does rename the label (so the check above can fail).

Usage (from the repository root, after `cargo build`):

    python3 tests/e2e/run.py --bin target/debug/hss-swr-exporter
        [--rules deploy/prometheus/alerts.yml] [--extra-check CMD ...]
        [--fire-timeout 60] [--seed 7] [--keep-tmp]

`--extra-check CMD` (repeatable) runs CMD through the shell after the alert
assertions, while Prometheus is still up, with PROMETHEUS_URL (and
EXPORTER_URL, SIMULATOR_URL) in its environment; a non-zero exit fails the
test. Needs `prometheus` and `promtool` on PATH. Standard library only.
Exit code 0 on success, 1 on failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_RULES = "deploy/prometheus/alerts.yml"

ALERT = "HssSwrNewMaliciousImage"
COUNTER = "hss_swr_malicious_images_detected_total"
JOB = "hss-swr-exporter"
# The same exporter scraped with honor_labels: false (last step only).
JOB_NOT_HONORED = "hss-swr-exporter-honor-labels-false"
# The target labels the Prometheus Operator attaches (ServiceMonitor).
K8S_NAMESPACE = "hss-swr-exporter"
OPERATOR_LABELS = {
    "namespace": K8S_NAMESPACE,
    "pod": "hss-swr-exporter-7d4b9c6f5-x2k8q",
    "service": "hss-swr-exporter",
    "container": "hss-swr-exporter",
    "endpoint": "metrics",
}
PANEL_QUERIES = "grafana/check/panel-queries.py"

ACCESS_KEY = "E2EAK"
SECRET_KEY = "e2e-secret"
QUOTA = "20/1s"
QUOTA_CALLS = 20
PROJECT_ID = "e2e0000000000000000000000000e2e0"  # any 32 hex digits
TARGET = "e2e"
EP = "all_granted_eps"
IMAGE_TYPES = ("private_image", "shared_image", "instance_image")
LANES = ("sweep", "malicious")

NEW_NAMESPACE = "e2e-new-ns"

# Generous upper bounds: every wait polls its condition until its deadline.
START_TIMEOUT = 30.0  # a process answering, the exporter ready
SCRAPE_TIMEOUT = 45.0  # Prometheus up, first scrape and series present
QUIET_WINDOW = 5.0  # evaluation cycles watched for a false alert
STOP_TIMEOUT = 10.0  # SIGTERM -> SIGKILL
EXTRA_CHECK_TIMEOUT = 300.0
LOG_TAIL_LINES = 40


class Failure(Exception):
    """A failed assertion or a broken precondition of the test."""


class Interrupted(Exception):
    """SIGTERM (SIGINT arrives as KeyboardInterrupt)."""


def on_sigterm(_signum, _frame):
    raise Interrupted("terminated")


# ---------------------------------------------------------------- helpers ---

T0 = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - T0


def say(message: str) -> None:
    print(f"[{elapsed():6.1f}s] {message}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def http(method: str, url: str, body: object | None = None, timeout: float = 5.0):
    """Returns (status, body text); (None, error text) when no answer came."""
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as error:
        return None, str(error)


def get_json(url: str) -> dict:
    status, text = http("GET", url)
    if status != 200:
        raise Failure(f"GET {url}: {status} {text[:300]}")
    try:
        return json.loads(text)
    except ValueError as error:
        raise Failure(f"GET {url}: not JSON ({error}): {text[:300]}") from None


def summarize(items: list[dict], limit: int = 3) -> str:
    """A short JSON excerpt of alerts or query results for a failure message."""
    head = json.dumps(items[:limit], ensure_ascii=False)
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)} item(s): {head}{more}"


def yaml_str(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(value)


# -------------------------------------------------------------- processes ---


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )

    def check_running(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise Failure(f"{self.name} exited early with code {code}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.terminate()
                self.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT:.0f}s: killing", flush=True)
                self.popen.kill()
                self.popen.wait()
            except ProcessLookupError:
                pass
        self.log.close()

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError as error:
            return f"(cannot read {self.log_path}: {error})"
        return "\n".join(text.splitlines()[-lines:])


class Context:
    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args = args
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.sim_port, self.exporter_port, self.prom_port = free_ports(3)
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.exporter_url = f"http://127.0.0.1:{self.exporter_port}"
        self.prom_url = f"http://127.0.0.1:{self.prom_port}"
        self.rules_path: Path | None = None
        self.timings: dict[str, float] = {}

    def start(self, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, argv, self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc

    def check_procs(self) -> None:
        for proc in self.procs:
            proc.check_running()

    def wait_until(self, what: str, probe, timeout: float, interval: float = 0.25):
        """Polls `probe()` until it returns something truthy; returns that.

        `probe` may return (False, detail) to say why it is not done yet; the
        last detail is reported on timeout. Fails at once if a child died.
        """
        deadline = time.monotonic() + timeout
        detail = ""
        while True:
            self.check_procs()
            result = probe()
            if isinstance(result, tuple) and len(result) == 2 and result[0] is False:
                detail = str(result[1])
            elif result:
                return result
            if time.monotonic() >= deadline:
                raise Failure(
                    f"timed out after {timeout:.0f}s waiting for {what}"
                    + (f"; last seen: {detail}" if detail else "")
                )
            time.sleep(interval)

    # -- Prometheus API --

    def query(self, expr: str) -> list[dict]:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        answer = get_json(url)
        if answer.get("status") != "success":
            raise Failure(f"query {expr!r} failed: {answer}")
        return answer["data"]["result"]

    def alerts(self, name: str = ALERT) -> list[dict]:
        answer = get_json(f"{self.prom_url}/api/v1/alerts")
        return [a for a in answer["data"]["alerts"] if a["labels"].get("alertname") == name]

    def alerting_rule(self, name: str = ALERT):
        """(rule, group) of the alerting rule `name`, or (None, None)."""
        answer = get_json(f"{self.prom_url}/api/v1/rules?type=alert")
        for group in answer["data"]["groups"]:
            for rule in group["rules"]:
                if rule.get("type") == "alerting" and rule.get("name") == name:
                    return rule, group
        return None, None

    def exporter_counter(self, namespace: str, image_type: str = "private_image"):
        """The detection counter for `namespace` as the exporter serves it now."""
        status, text = http("GET", f"{self.exporter_url}/metrics")
        if status != 200:
            return None
        for line in text.splitlines():
            if (
                line.startswith(COUNTER + "{")
                and f'namespace="{namespace}"' in line
                and f'image_type="{image_type}"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return None


# ------------------------------------------------------------------ steps ---


def step_simulator(ctx: Context) -> None:
    ctx.start(
        "simulator",
        [
            ctx.args.bin, "simulate",
            "--listen", f"127.0.0.1:{ctx.sim_port}",
            "--images", "3000", "--namespaces", "12",
            "--quota", QUOTA, "--seed", str(ctx.args.seed),
            "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
        ],
    )
    ctx.wait_until(
        f"the simulator to answer on {ctx.sim_url}",
        lambda: http("GET", f"{ctx.sim_url}/_sim/stats")[0] == 200,
        START_TIMEOUT,
    )


def write_exporter_config(ctx: Context) -> Path:
    path = ctx.tmp / "exporter.yml"
    path.write_text(
        f"""# generated by tests/e2e/run.py
api_rate_limit: {QUOTA}
poll_interval: 20s
malicious_interval: 2s
state_file: {yaml_str(str(ctx.tmp / "exporter-state.json"))}
credentials:
  access_key: {yaml_str(ACCESS_KEY)}
  secret_key: {yaml_str(SECRET_KEY)}
targets:
  - name: {TARGET}
    region: cn-north-4
    project_id: {yaml_str(PROJECT_ID)}
    endpoint: {yaml_str(ctx.sim_url)}
    enterprise_project_ids: [{EP}]
    image_types: [{", ".join(IMAGE_TYPES)}]
""",
        "utf-8",
    )
    return path


def step_exporter(ctx: Context) -> None:
    config = write_exporter_config(ctx)
    check = subprocess.run(
        [ctx.args.bin, "check-config", "--config.file", str(config)],
        capture_output=True, text=True, timeout=30,
    )
    if check.returncode != 0:
        raise Failure(f"check-config refused the generated config:\n{check.stdout}{check.stderr}")
    ctx.start(
        "exporter",
        [
            ctx.args.bin,
            "--config.file", str(config),
            "--web.listen-address", f"127.0.0.1:{ctx.exporter_port}",
            "--log.format", "json",
        ],
    )

    def ready():
        status, text = http("GET", f"{ctx.exporter_url}/-/ready")
        return True if status == 200 else (False, f"/-/ready: {status} {text[:200]}")

    ctx.wait_until("the exporter's /-/ready to answer 200", ready, START_TIMEOUT)


def resolve_rules(arg: str) -> Path:
    path = Path(arg)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path.resolve()


def step_preflight(ctx: Context) -> None:
    """Everything that can be checked before a process starts."""
    if getattr(ctx.args, "bin_error", None):
        raise Failure(ctx.args.bin_error)
    rules = resolve_rules(ctx.args.rules)
    if not rules.is_file():
        raise Failure(f"alert rules file not found: {rules}")
    ctx.rules_path = rules
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            raise Failure(f"{tool} is not on PATH (scripts/test installs Debian's prometheus package)")
    say(f"    binary {ctx.args.bin}, rules {rules}")


def scrape_job(ctx: Context, name: str, honor_labels: bool) -> str:
    """A scrape job for the exporter with the Operator's target labels."""
    labels = "".join(f"\n          {k}: {yaml_str(v)}" for k, v in OPERATOR_LABELS.items())
    return f"""  - job_name: {yaml_str(name)}
    honor_labels: {"true" if honor_labels else "false"}
    static_configs:
      - targets: [{yaml_str(f"127.0.0.1:{ctx.exporter_port}")}]
        labels:{labels}
"""


def write_prometheus_config(ctx: Context, with_not_honored: bool = False) -> Path:
    config = ctx.tmp / "prometheus.yml"
    jobs = scrape_job(ctx, JOB, honor_labels=True)
    if with_not_honored:
        jobs += scrape_job(ctx, JOB_NOT_HONORED, honor_labels=False)
    config.write_text(
        f"""# generated by tests/e2e/run.py
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {yaml_str(str(ctx.rules_path))}
scrape_configs:
{jobs}""",
        "utf-8",
    )
    return config


def step_prometheus(ctx: Context) -> None:
    rules = ctx.rules_path
    config = write_prometheus_config(ctx)
    # promtool checks the generated config and the rule files it names, with a
    # readable message, before the server would refuse them.
    check = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    if check.returncode != 0:
        raise Failure(f"promtool check config failed:\n{check.stdout}{check.stderr}")
    # Debian's defaults point at /etc and /var: give every path a temp dir.
    consoles = ctx.tmp / "consoles"
    libraries = ctx.tmp / "console_libraries"
    consoles.mkdir()
    libraries.mkdir()
    ctx.start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{ctx.prom_port}",
            f"--storage.tsdb.path={ctx.tmp / 'prometheus-data'}",
            f"--web.console.templates={consoles}",
            f"--web.console.libraries={libraries}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=info",
        ],
    )

    def ready():
        status, text = http("GET", f"{ctx.prom_url}/-/ready")
        return True if status == 200 else (False, f"/-/ready: {status} {text[:200]}")

    ctx.wait_until("Prometheus's /-/ready to answer 200", ready, START_TIMEOUT)
    rule, group = ctx.alerting_rule()
    if rule is None:
        raise Failure(f"Prometheus loaded no alerting rule named {ALERT} from {rules}")
    say(
        f"    rule {ALERT}: group {group['name']!r} every {group.get('interval')}s, "
        f"for {rule.get('duration')}s, expr {rule.get('query')}"
    )


def step_scraped(ctx: Context) -> None:
    def up():
        result = ctx.query(f'up{{job="{JOB}"}}')
        values = [r["value"][1] for r in result]
        return True if values == ["1"] else (False, f"up = {values}")

    ctx.wait_until(f'up{{job="{JOB}"}} == 1', up, SCRAPE_TIMEOUT)

    def counter_series():
        result = ctx.query(f'{COUNTER}{{job="{JOB}"}}')
        return result if result else (False, f"no {COUNTER} series yet")

    series = ctx.wait_until(f"{COUNTER} series in Prometheus", counter_series, SCRAPE_TIMEOUT)
    nonzero = [s for s in series if float(s["value"][1]) != 0]
    if nonzero:
        raise Failure(f"{COUNTER} is not 0 after the baseline run: {summarize(nonzero)}")
    namespaces = sorted({s["metric"].get("namespace", "") for s in series})
    say(f"    {len(series)} {COUNTER} series, all 0, namespaces: {', '.join(namespaces)}")
    if NEW_NAMESPACE in namespaces:
        raise Failure(f"namespace {NEW_NAMESPACE} exists before the injection")


def rfc3339_epoch(text: str) -> float:
    """Epoch seconds of an RFC 3339 time as Prometheus writes it (ns precision)."""
    main, _, rest = text.partition(".")
    if not rest:  # no fraction: "2026-01-01T00:00:00Z"
        main, zone, fraction = text[:19], text[19:], ""
    else:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = rest[:digits], rest[digits:]
    if zone in ("Z", "z"):
        zone = "+00:00"
    stamp = datetime.fromisoformat(main + zone).timestamp()
    return stamp + (float("0." + fraction) if fraction else 0.0)


def step_quiet(ctx: Context) -> None:
    """Watches several evaluation cycles: the alert must be neither pending nor firing,
    and no other alert may fire.

    Lasts QUIET_WINDOW seconds, and at least until the rule's last evaluation
    is one group interval past the start of the window (so a rule group with
    a longer interval than 1s is still covered).
    """
    window_start = time.time()
    deadline = time.monotonic() + QUIET_WINDOW
    _, group = ctx.alerting_rule()
    interval = float(group.get("interval") or 1)
    hard_deadline = time.monotonic() + QUIET_WINDOW + 3 * interval + 10
    while True:
        ctx.check_procs()
        active = ctx.alerts()
        if active:
            raise Failure(f"{ALERT} is {active[0]['state']} with nothing new: {summarize(active)}")
        series = ctx.query(f'ALERTS{{alertname="{ALERT}"}}')
        if series:
            raise Failure(f"ALERTS has {ALERT} with nothing new: {summarize(series)}")
        # No alert of any kind may fire before the injection (others may be
        # pending: their `for` has not elapsed in a test this short).
        firing = ctx.query('ALERTS{alertstate="firing"}')
        if firing:
            raise Failure(f"an alert fires with nothing injected: {summarize(firing)}")
        rule, _ = ctx.alerting_rule()
        if rule is None or rule.get("health") == "err":
            raise Failure(f"rule {ALERT} is unhealthy: {json.dumps(rule)}")
        last = rule.get("lastEvaluation") or ""
        evaluated = bool(last) and not last.startswith("0001-") and (
            rfc3339_epoch(last) >= window_start + interval
        )
        now = time.monotonic()
        if now >= deadline and evaluated:
            break
        if now >= hard_deadline:
            raise Failure(f"rule {ALERT} was not evaluated again (last evaluation {last!r})")
        time.sleep(0.5)
    say(f"    quiet for {time.time() - window_start:.1f}s; rule health {rule.get('health')!r}, "
        f"last evaluated {last}")


def inject(ctx: Context, namespace: str, image: str, version: str, files: int) -> float:
    body = {
        "namespace": namespace,
        "image_name": image,
        "image_version": version,
        "malicious_file_num": files,
        "image_type": "private_image",
        "enterprise_project_id": "0",
    }
    start = time.monotonic()
    status, text = http("POST", f"{ctx.sim_url}/_sim/malicious", body)
    if status != 200:
        raise Failure(f"POST /_sim/malicious {body}: {status} {text[:300]}")
    row = json.loads(text)
    if row.get("malicious_file_num") != files or row.get("namespace") != namespace:
        raise Failure(f"POST /_sim/malicious answered an unexpected row: {text[:300]}")
    return start


def wait_for_firing(ctx: Context, namespace: str, injected_at: float, before: float) -> None:
    """Waits for the alert on `namespace`; prints the latency of each hop."""
    seen: dict[str, float] = {}
    timeout = ctx.args.fire_timeout

    def probe():
        now = time.monotonic()
        if "exporter" not in seen:
            value = ctx.exporter_counter(namespace)
            if value is not None and value > before:
                seen["exporter"] = now
        if "prometheus" not in seen:
            result = ctx.query(f'{COUNTER}{{job="{JOB}",namespace="{namespace}"}} > {before}')
            if result:
                seen["prometheus"] = now
        states = [a["state"] for a in ctx.alerts() if a["labels"].get("namespace") == namespace]
        if "pending" in states and "pending" not in seen:
            seen["pending"] = now
        if "firing" in states:
            seen["firing"] = now
            return True
        hops = ", ".join(f"{k} at +{v - injected_at:.1f}s" for k, v in seen.items())
        return (False, f"alert states {states or 'none'}; {hops or 'nothing seen'}")

    ctx.wait_until(f"{ALERT} firing for namespace={namespace}", probe, timeout)
    hops = ", ".join(f"{k} +{v - injected_at:.1f}s" for k, v in seen.items())
    latency = seen["firing"] - injected_at
    ctx.timings[namespace] = latency
    say(f"    namespace {namespace}: injection -> firing {latency:.1f}s ({hops})")


def expect_counter(ctx: Context, namespace: str, expected: float) -> None:
    result = ctx.query(
        f'{COUNTER}{{job="{JOB}",namespace="{namespace}",image_type="private_image"}}'
    )
    values = [float(r["value"][1]) for r in result]
    if values != [expected]:
        raise Failure(
            f"{COUNTER}{{namespace={namespace!r},image_type=private_image}} is {values}, "
            f"expected [{expected:g}]"
        )


def step_new_namespace(ctx: Context) -> None:
    injected_at = inject(ctx, NEW_NAMESPACE, "evil", "1.0", 3)
    wait_for_firing(ctx, NEW_NAMESPACE, injected_at, before=0)
    expect_counter(ctx, NEW_NAMESPACE, 1)


def step_existing_namespace(ctx: Context) -> None:
    result = ctx.query(
        f'{COUNTER}{{job="{JOB}",image_type="private_image",instance_name=""}} == 0'
    )
    # A plain name keeps the PromQL selectors below free of escaping.
    existing = sorted(
        ns
        for ns in {r["metric"].get("namespace", "") for r in result} - {NEW_NAMESPACE}
        if ns and all(c.isascii() and (c.isalnum() or c in "-_.") for c in ns)
    )
    if not existing:
        raise Failure(f"no plain-named private_image namespace with {COUNTER} == 0: {summarize(result)}")
    namespace = existing[0]
    injected_at = inject(ctx, namespace, "e2e-evil-existing", "2.0", 1)
    wait_for_firing(ctx, namespace, injected_at, before=0)
    expect_counter(ctx, namespace, 1)
    # The first alert must not have gone away meanwhile.
    states = [a["state"] for a in ctx.alerts() if a["labels"].get("namespace") == NEW_NAMESPACE]
    if "firing" not in states:
        raise Failure(f"{ALERT} for {NEW_NAMESPACE} stopped firing: {states}")


def step_health(ctx: Context) -> None:
    result = ctx.query(f'hss_swr_up{{job="{JOB}"}}')
    seen = {}
    for r in result:
        m = r["metric"]
        key = (m.get("target"), m.get("enterprise_project_id"), m.get("image_type"), m.get("lane"))
        seen[key] = r["value"][1]
    problems = []
    for image_type in IMAGE_TYPES:
        for lane in LANES:
            key = (TARGET, EP, image_type, lane)
            if seen.get(key) != "1":
                problems.append(f"{image_type}/{lane} = {seen.get(key, 'absent')}")
    extra = {k: v for k, v in seen.items() if v != "1"}
    if extra:
        problems.append(f"series not 1: {extra}")
    if problems:
        raise Failure("hss_swr_up is not 1 for every scope and lane: " + "; ".join(problems))

    throttled = ctx.query(f'hss_swr_api_throttled_total{{job="{JOB}"}}')
    if not throttled:
        raise Failure("hss_swr_api_throttled_total is absent")
    if any(float(r["value"][1]) != 0 for r in throttled):
        raise Failure(f"hss_swr_api_throttled_total is not 0: {summarize(throttled)}")
    refused = ctx.query(f'hss_swr_api_requests_total{{job="{JOB}",code!="200"}} > 0')
    if refused:
        raise Failure(f"the exporter got non-200 answers: {summarize(refused)}")
    # The simulator's own view of the same run.
    stats = get_json(f"{ctx.sim_url}/_sim/stats")
    if stats["by_status"].get("429", 0) != 0:
        raise Failure(f"the simulator answered 429: {stats}")
    if stats["max_calls_per_window"] > QUOTA_CALLS:
        raise Failure(f"the exporter exceeded {QUOTA} on the simulator: {stats}")
    # Information only: other rules of the file that are active now.
    answer = get_json(f"{ctx.prom_url}/api/v1/alerts")
    others = sorted(
        {
            f"{a['labels'].get('alertname')}:{a['state']}"
            for a in answer["data"]["alerts"]
            if a["labels"].get("alertname") != ALERT
        }
    )
    say(f"    other active alerts: {', '.join(others) or 'none'}")
    say(
        f"    {len(seen)} hss_swr_up series all 1; 0 throttled; simulator saw "
        f"{stats['calls']} calls {stats['by_status']}, at most "
        f"{stats['max_calls_per_window']} in any 1s window"
    )


def step_extra_checks(ctx: Context) -> None:
    env = dict(
        os.environ,
        PROMETHEUS_URL=ctx.prom_url,
        EXPORTER_URL=ctx.exporter_url,
        SIMULATOR_URL=ctx.sim_url,
    )
    for command in ctx.args.extra_check:
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, shell=True, env=env, cwd=REPO_ROOT, capture_output=True,
                text=True, timeout=EXTRA_CHECK_TIMEOUT,
            )
        except subprocess.TimeoutExpired as error:
            raise Failure(f"extra check {command!r} ran over {EXTRA_CHECK_TIMEOUT:.0f}s") from error
        output = (done.stdout + done.stderr).rstrip()
        if done.returncode != 0:
            raise Failure(f"extra check {command!r} exited {done.returncode}:\n{output}")
        say(f"    extra check {command!r} passed in {time.monotonic() - started:.1f}s")
        if output:
            print("\n".join("      " + line for line in output.splitlines()[-20:]), flush=True)


# ----------------------------------------------- Kubernetes label safety ---

LABEL_VALUE = re.compile(r'namespace="((?:[^"\\]|\\.)*)"')


def exporter_namespaces(ctx: Context, family: str = "hss_swr_") -> set[str]:
    """The SWR namespaces the exporter itself serves: in the family `family`,
    or in any hss_swr_ family by default."""
    status, text = http("GET", f"{ctx.exporter_url}/metrics")
    if status != 200:
        raise Failure(f"GET /metrics of the exporter: {status}")
    prefix = family + "{" if family != "hss_swr_" else family
    found = set()
    for line in text.splitlines():
        if line.startswith(prefix):
            match = LABEL_VALUE.search(line)
            if match:
                found.add(json.loads(f'"{match.group(1)}"'))
    return found


def no_exported_namespace(ctx: Context, where: str, result: list[dict]) -> None:
    renamed = [r for r in result if "exported_namespace" in r["metric"]]
    if renamed:
        raise Failure(f"{where}: series with exported_namespace (honor_labels lost): {summarize(renamed)}")


def step_label_safety(ctx: Context) -> None:
    """Namespace series keep the exporter's SWR namespace under the Operator's
    target label namespace="hss-swr-exporter"."""
    swr = exporter_namespaces(ctx, "hss_swr_images")
    if not swr or K8S_NAMESPACE in swr:
        raise Failure(f"unexpected namespaces on the exporter: {sorted(swr)}")
    result = ctx.query(f'count by (namespace) (hss_swr_images{{job="{JOB}"}})')
    seen = {r["metric"].get("namespace", "") for r in result}
    if seen != swr:
        raise Failure(
            f"namespaces in Prometheus {sorted(seen)} differ from the exporter's {sorted(swr)} "
            f"(target label namespace={K8S_NAMESPACE!r}, honor_labels: true)"
        )
    no_exported_namespace(ctx, "hss_swr_*", ctx.query(f'{{__name__=~"hss_swr_.+",job="{JOB}"}}'))
    # Series the exporter writes without a namespace get the pod's one, as
    # every other series of the pod does.
    up = ctx.query(f'hss_swr_up{{job="{JOB}"}}')
    if not up or any(r["metric"].get("namespace") != K8S_NAMESPACE for r in up):
        raise Failure(f"hss_swr_up should carry the target's namespace {K8S_NAMESPACE!r}: {summarize(up)}")
    say(f"    {len(seen)} SWR namespaces in Prometheus, as on the exporter; the target label "
        f"namespace={K8S_NAMESPACE!r} only on series without their own (hss_swr_up: {len(up)} series)")


# Comparison operators with a constant right-hand side: removed from an alert
# expression to see every series it looks at, not only the firing ones.
THRESHOLD = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*\d+(?:\s*\*\s*\d+)*")
GROUPS_BY_NAMESPACE = re.compile(r"\bby\s*\([^)]*\bnamespace\b")
# Alerts whose expression must return namespace series in this test (the
# simulator has namespaces with malicious images).
NAMESPACE_VARIABLE = re.compile(r"\$\{?namespace\b|\[\[namespace\b")
MUST_SEE_NAMESPACES = {"HssSwrNewMaliciousImage", "HssSwrMaliciousFilesPresent"}


def load_panel_queries():
    spec = importlib.util.spec_from_file_location("panel_queries", REPO_ROOT / PANEL_QUERIES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_alerts_and_dashboard_see_swr_namespaces(ctx: Context) -> None:
    swr = exporter_namespaces(ctx)
    answer = get_json(f"{ctx.prom_url}/api/v1/rules?type=alert")
    rules = [r for g in answer["data"]["groups"] for r in g["rules"] if r.get("type") == "alerting"]
    if not rules:
        raise Failure("no alerting rules loaded")
    lines = []
    for rule in rules:
        name, expr = rule["name"], THRESHOLD.sub("", rule["query"])
        result = ctx.query(expr)
        no_exported_namespace(ctx, f"alert {name} (thresholds removed)", result)
        namespaces = {r["metric"]["namespace"] for r in result if "namespace" in r["metric"]}
        if GROUPS_BY_NAMESPACE.search(rule["query"]):
            wrong = namespaces - swr
            if wrong:
                raise Failure(f"alert {name} groups by namespaces that are not SWR namespaces: {sorted(wrong)}")
            if name in MUST_SEE_NAMESPACES and not namespaces:
                raise Failure(f"alert {name} (thresholds removed) sees no namespace: {expr}")
        lines.append(f"{name}: {len(result)} series, {len(namespaces)} namespaces")
    missing = MUST_SEE_NAMESPACES - {r["name"] for r in rules}
    if missing:
        raise Failure(f"alerting rules not loaded: {sorted(missing)}")
    say("    alert expressions without thresholds: " + "; ".join(lines))

    # The dashboard with its namespace variable set to one SWR namespace, as a
    # user picks it: namespace panels show that namespace and nothing else.
    pq = load_panel_queries()
    dashboard = json.loads((REPO_ROOT / "grafana/dashboards/hss-swr-exporter.json").read_text("utf-8"))
    values = pq.substitutions(dashboard)
    swept = exporter_namespaces(ctx, "hss_swr_images")
    chosen = sorted(ns for ns in swept if ns and all(c.isascii() and (c.isalnum() or c in "-_") for c in ns))[0]
    values["namespace"] = chosen
    with_data = 0
    namespace_panels = 0
    offered = 0
    for kind, where, raw, _optional in pq.collect(dashboard):
        expr = pq.substitute(raw, values)
        if kind == "variable":
            match = pq.LABEL_VALUES.match(expr)
            if match and match.group(2) == "namespace":
                url = f"{ctx.prom_url}/api/v1/label/namespace/values?" + urllib.parse.urlencode(
                    {"match[]": match.group(1).strip()})
                got = set(get_json(url)["data"])
                if not got or not got <= swr or chosen not in got:
                    raise Failure(f"{where} offers {sorted(got)}, expected SWR namespaces only "
                                  f"(the exporter serves {sorted(swr)}), {chosen!r} among them")
                offered = len(got)
            continue
        result = ctx.query(expr)
        no_exported_namespace(ctx, where, result)
        if not NAMESPACE_VARIABLE.search(raw):
            continue
        namespace_panels += 1
        wrong = {r["metric"]["namespace"] for r in result if "namespace" in r["metric"]} - {chosen}
        if wrong:
            raise Failure(f"{where} with namespace={chosen!r} returns other namespaces {sorted(wrong)}: {expr}")
        if result:
            with_data += 1
    table = ctx.query(
        f'sum by (target, instance_name, registry_name, namespace) (hss_swr_images{{namespace=~"{chosen}"}})'
    )
    if not table or any(r["metric"].get("namespace") != chosen for r in table):
        raise Failure(f"the Namespaces table query has no series for namespace {chosen!r}: {summarize(table)}")
    if with_data == 0:
        raise Failure(f"no dashboard query filtered by namespace={chosen!r} returned data")
    say(f"    dashboard with namespace={chosen!r}: {with_data} of {namespace_panels} namespace-filtered "
        f"queries return data, all for {chosen!r}; variable namespace offers {offered} SWR namespaces, not {K8S_NAMESPACE!r}")


def step_honor_labels_before_after(ctx: Context) -> None:
    """Adds a job with honor_labels: false and prints the two side by side."""
    write_prometheus_config(ctx, with_not_honored=True)
    prometheus = next(p for p in ctx.procs if p.name == "prometheus")
    prometheus.popen.send_signal(signal.SIGHUP)

    def scraped():
        result = ctx.query(f'hss_swr_malicious_files{{job="{JOB_NOT_HONORED}"}}')
        return result if result else (False, f"no series of job {JOB_NOT_HONORED} yet")

    ctx.wait_until(f"series of job {JOB_NOT_HONORED} after the reload", scraped, SCRAPE_TIMEOUT)
    swr = exporter_namespaces(ctx, "hss_swr_malicious_files")
    group = "target, enterprise_project_id, image_type, instance_name, registry_name, namespace"
    report = {}
    for job, honor in ((JOB_NOT_HONORED, False), (JOB, True)):
        series = ctx.query(f'hss_swr_malicious_files{{job="{job}"}}')
        namespaces = {r["metric"].get("namespace") for r in series}
        exported = {r["metric"].get("exported_namespace") for r in series} - {None}
        groups = ctx.query(f'count(max by ({group}) (hss_swr_malicious_files{{job="{job}"}}))')
        report[honor] = (series, namespaces, exported, int(float(groups[0]["value"][1])) if groups else 0)
        print(f"      honor_labels: {'true ' if honor else 'false'} {len(series)} hss_swr_malicious_files series; "
              f"namespace values {sorted(namespaces)[:4]}{' ...' if len(namespaces) > 4 else ''}; "
              f"exported_namespace values {sorted(exported)[:4]}{' ...' if len(exported) > 4 else ''}; "
              f"alert rule groups (max by {group}): {report[honor][3]}", flush=True)
        for r in sorted(series, key=lambda r: json.dumps(r["metric"], sort_keys=True))[:2]:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(r["metric"].items()))
            print(f"        {{{labels}}} {r['value'][1]}", flush=True)
    _, before_ns, before_exported, before_groups = report[False]
    _, after_ns, after_exported, after_groups = report[True]
    if before_ns != {K8S_NAMESPACE} or before_exported != swr:
        raise Failure(
            f"honor_labels: false did not rename the label as expected: namespace {sorted(before_ns)}, "
            f"exported_namespace {sorted(before_exported)}"
        )
    if after_ns != swr or after_exported:
        raise Failure(f"honor_labels: true: namespace {sorted(after_ns)}, exported_namespace {sorted(after_exported)}")
    if not before_groups < after_groups:
        raise Failure(f"expected fewer alert groups without honor_labels: {before_groups} vs {after_groups}")
    say(f"    without honor_labels every SWR namespace reads namespace={K8S_NAMESPACE!r} "
        f"({before_groups} alert groups instead of {after_groups}); with it they are kept")


STEPS = [
    ("0 preflight", step_preflight),
    ("1 simulator answers", step_simulator),
    ("2 exporter ready", step_exporter),
    ("3 prometheus ready with the alert rules", step_prometheus),
    ("4a prometheus scrapes the exporter, detection counter present", step_scraped),
    ("4b SWR namespaces kept under the Operator's target label namespace (honor_labels)", step_label_safety),
    (f"4c {ALERT} quiet while nothing is new", step_quiet),
    (f"5a {ALERT} fires for a new namespace", step_new_namespace),
    (f"5b {ALERT} fires for an existing namespace", step_existing_namespace),
    ("6 every lane up, no 429", step_health),
    ("6b every alert expression and dashboard query sees SWR namespaces", step_alerts_and_dashboard_see_swr_namespaces),
    ("8 extra checks", step_extra_checks),
    ("9 honor_labels false vs true, before and after", step_honor_labels_before_after),
]


# ------------------------------------------------------------------- main ---


def report_failure(ctx: Context) -> None:
    for proc in ctx.procs:
        print(f"\n----- last {LOG_TAIL_LINES} lines of the {proc.name} log ({proc.log_path}) -----")
        print(proc.tail())
    if any(p.name == "prometheus" for p in ctx.procs):
        for path in ("/api/v1/alerts", "/api/v1/rules?type=alert"):
            status, text = http("GET", f"{ctx.prom_url}{path}")
            print(f"\n----- Prometheus {path} ({status}) -----")
            print(text[:4000])
    if any(p.name == "exporter" for p in ctx.procs):
        status, text = http("GET", f"{ctx.exporter_url}/status")
        print(f"\n----- exporter /status ({status}) -----")
        print(text[:4000])
    sys.stdout.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, help="the hss-swr-exporter binary")
    parser.add_argument(
        "--rules", default=DEFAULT_RULES,
        help=f"alert rules file, relative to the repository root (default {DEFAULT_RULES})",
    )
    parser.add_argument(
        "--extra-check", action="append", default=[], metavar="CMD",
        help="shell command run with PROMETHEUS_URL set after the alert checks (repeatable)",
    )
    parser.add_argument(
        "--fire-timeout", type=float, default=60.0,
        help="seconds an injected malicious image may take to fire the alert (default 60)",
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    parser.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary directory (logs, data)"
    )
    args = parser.parse_args(argv)
    binary = Path(args.bin)
    candidates = [binary] if binary.is_absolute() else [Path.cwd() / binary, REPO_ROOT / binary]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            args.bin = str(candidate.resolve())
            break
    else:
        # Reported as a test failure (exit 1) by the preflight step.
        args.bin_error = f"--bin {args.bin}: no such executable file"
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="hss-swr-e2e-"))
    ctx = Context(args, tmp)
    say(
        f"e2e: simulator :{ctx.sim_port}, exporter :{ctx.exporter_port}, "
        f"prometheus :{ctx.prom_port}, tmp {tmp}"
    )
    ok = False
    name = "setup"
    try:
        for name, step in STEPS:
            if step is step_extra_checks and not args.extra_check:
                continue
            started = time.monotonic()
            step(ctx)
            say(f"ok   step {name} ({time.monotonic() - started:.1f}s)")
        ok = True
    except Failure as error:
        say(f"FAIL step {name}: {error}")
    except (KeyboardInterrupt, Interrupted):
        say(f"FAIL interrupted during step {name}")
    except Exception as error:  # noqa: BLE001 - report anything with the logs
        say(f"FAIL step {name}: {type(error).__name__}: {error}")
    finally:
        if not ok:
            try:
                report_failure(ctx)
            except (KeyboardInterrupt, Interrupted):
                pass
        # Ignore further signals while stopping, so cleanup always finishes.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopping = time.monotonic()
        for proc in reversed(ctx.procs):
            proc.stop()
        if ctx.procs:
            codes = ", ".join(f"{p.name} {p.popen.returncode}" for p in ctx.procs)
            say(f"step 7 stopped every process ({codes}) in {time.monotonic() - stopping:.1f}s")
        if args.keep_tmp or not ok:
            print(f"logs and data kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if ok:
        latencies = ", ".join(f"{ns} {t:.1f}s" for ns, t in ctx.timings.items())
        say(f"PASS (injection -> firing: {latencies})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
