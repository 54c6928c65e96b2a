#!/usr/bin/env python3
"""Validates deploy/kubernetes/ offline; run by scripts/check-deploy.

1. kustomization.yaml: every resource and generator file exists and parses;
   secret.example.yaml is not among the resources.
2. The kustomize build (`kubectl kustomize`, when kubectl is installed;
   otherwise the resource files as they are, with a note).
3. Every manifest file and every rendered object against the Kubernetes
   OpenAPI schemas of kubernetes-validate, strict (unknown fields are
   errors), for the oldest and the newest Kubernetes version checked
   (K8S_VERSIONS). The Prometheus Operator kinds, which kubernetes-validate has
   no schema for, against the subset of their CRD schemas below (strict too).
4. The deployment's promises: one replica, Recreate, probes on /-/healthy and
   /-/ready, resources, the restricted security context, the mounts matching
   config.yml (config path, secret files, state_file on the PVC), the Service
   and ServiceMonitor port, honorLabels on the ServiceMonitor and on the
   PodMonitor alternative (podmonitor.yaml, validated but not applied), the
   NetworkPolicy ports, the PrometheusRule equal to
   deploy/prometheus/alerts.yml, and the Grafana dashboard ConfigMap
   (grafana-dashboard.yaml) carrying grafana/dashboards/hss-swr-exporter.json
   byte for byte, with the sidecar's label grafana_dashboard: "1".
5. config.yml with the exporter's own `check-config` (the secret paths mapped
   to a temporary directory), when the binary is given with --binary.

Needs PyYAML and kubernetes-validate (which brings jsonschema).
Usage: deploy/kubernetes/check-manifests.py [--binary PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ALERTS = REPO / "deploy/prometheus/alerts.yml"
DASHBOARD = REPO / "grafana/dashboards/hss-swr-exporter.json"
DASHBOARD_CONFIGMAP = "hss-swr-exporter-dashboard"
K8S_VERSIONS = ["1.28", kubernetes_validate.latest_version()]
PORT = 9929
CONFIG_PATH = "/etc/hss-swr-exporter/config.yml"

failures: list[str] = []


def ok(msg: str) -> None:
    print(f"  ok  {msg}")


def fail(msg: str) -> None:
    print(f"  FAIL {msg}")
    failures.append(msg)


# ------------------------------------------- CRD schemas (strict subsets) --

DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
METADATA = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                   "namespace": {"type": "string"}, "labels": STRING_MAP, "annotations": STRING_MAP},
}
ANY = {}
ENDPOINT_FIELDS = ["targetPort", "params", "tlsConfig", "bearerTokenFile", "bearerTokenSecret", "authorization",
                   "honorLabels", "honorTimestamps", "trackTimestampsStaleness", "basicAuth", "oauth2",
                   "metricRelabelings", "relabelings", "proxyUrl", "noProxy", "proxyFromEnvironment",
                   "proxyConnectHeader", "followRedirects", "enableHttp2", "filterRunning"]
SERVICE_MONITOR = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "targetLimit": {"type": "integer", "minimum": 0},
                "scrapeClass": {"type": "string"},
                "attachMetadata": ANY,
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": DURATION, "scrapeTimeout": DURATION,
                        **{name: ANY for name in ENDPOINT_FIELDS},
                    }}},
            },
        },
    },
}
RULE = {
    "type": "object", "additionalProperties": False, "required": ["expr"],
    "properties": {
        "alert": {"type": "string", "minLength": 1}, "record": {"type": "string", "minLength": 1},
        "expr": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
        "for": DURATION, "keep_firing_for": DURATION,
        "labels": STRING_MAP, "annotations": STRING_MAP,
    },
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}
PROMETHEUS_RULE = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["groups"],
            "properties": {"groups": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string", "minLength": 1}, "interval": DURATION, "query_offset": DURATION,
                    "limit": {"type": "integer"}, "partial_response_strategy": {"type": "string"},
                    "labels": STRING_MAP, "rules": {"type": "array", "items": RULE},
                }}}},
        },
    },
}
POD_MONITOR = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": SERVICE_MONITOR["properties"]["spec"]["properties"]["namespaceSelector"],
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "targetLimit": {"type": "integer", "minimum": 0},
                "scrapeClass": {"type": "string"},
                "attachMetadata": ANY,
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"}, "portNumber": {"type": "integer"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": DURATION, "scrapeTimeout": DURATION,
                        **{name: ANY for name in ENDPOINT_FIELDS},
                    }}},
            },
        },
    },
}
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
               ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
               ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE}


def validate(obj: dict, where: str) -> None:
    kind, api = obj.get("kind"), obj.get("apiVersion")
    name = f"{where}: {kind}/{obj.get('metadata', {}).get('name')}"
    if (api, kind) in CRD_SCHEMAS:
        errors = sorted(jsonschema.Draft202012Validator(CRD_SCHEMAS[(api, kind)]).iter_errors(obj),
                        key=lambda e: list(e.absolute_path))
        if errors:
            for error in errors:
                fail(f"{name}: {'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}")
        else:
            ok(f"{name} (CRD schema subset, strict)")
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            fail(f"{name}: no schema for {api} {kind} in Kubernetes {version}")
            return
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.absolute_path)) or "(root)"
            fail(f"{name}: Kubernetes {version}: {path}: {error.message}")
            return
    ok(f"{name} (Kubernetes {' and '.join(K8S_VERSIONS)}, strict)")


# ------------------------------------------------------------- the checks --

def load_all(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", help="hss-swr-exporter binary for check-config on config.yml")
    args = parser.parse_args()

    print("kustomization.yaml")
    kustomization = yaml.safe_load((HERE / "kustomization.yaml").read_text(encoding="utf-8"))
    resources = kustomization.get("resources", [])
    files: dict[str, list[dict]] = {}
    for rel in resources:
        path = HERE / rel
        if not path.is_file():
            fail(f"resource {rel} does not exist")
            continue
        try:
            files[rel] = load_all(path)
            ok(f"resource {rel}: {len(files[rel])} object(s)")
        except yaml.YAMLError as error:
            fail(f"resource {rel} does not parse: {error}")
    generated = {}
    for generator in kustomization.get("configMapGenerator", []):
        for entry in generator.get("files", []):
            key, _, rel = entry.rpartition("=")
            path = HERE / rel
            if not path.is_file():
                fail(f"configMapGenerator {generator['name']}: {rel} does not exist")
                continue
            yaml.safe_load(path.read_text(encoding="utf-8"))
            generated[(generator["name"], key or Path(rel).name)] = path
            ok(f"configMapGenerator {generator['name']}: {rel} parses")
    if "secret.example.yaml" in resources:
        fail("secret.example.yaml is in resources: placeholder credentials would be applied")
    # Files that are not applied by default but must be valid: the Secret
    # example, and the PodMonitor alternative to the ServiceMonitor.
    for example in ["secret.example.yaml", "podmonitor.yaml"]:
        files_example = load_all(HERE / example)
        for obj in files_example:
            validate(obj, example)
    if "podmonitor.yaml" in resources and "servicemonitor.yaml" in resources:
        fail("both servicemonitor.yaml and podmonitor.yaml are in resources: every series would be scraped twice")

    print("manifests, one file at a time")
    for rel, objs in files.items():
        for obj in objs:
            validate(obj, rel)

    print("kustomize build")
    kubectl = shutil.which("kubectl")
    rendered: list[dict]
    if kubectl:
        done = subprocess.run([kubectl, "kustomize", str(HERE)], capture_output=True, text=True)
        if done.returncode != 0:
            fail(f"kubectl kustomize failed: {done.stderr.strip()}")
            return 1
        rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        ok(f"kubectl kustomize: {len(rendered)} objects")
        for obj in rendered:
            validate(obj, "rendered")
    else:
        print("  note: kubectl is not installed: checking the resource files as they are, "
              "without the namespace, the generated ConfigMap and the image override")
        rendered = [obj for objs in files.values() for obj in objs]

    print("deployment contract")
    check_contract(rendered, kustomization, generated, bool(kubectl))

    if args.binary:
        print("config.yml")
        check_config(Path(args.binary), generated)

    if failures:
        print(f"check-manifests: {len(failures)} problem(s)")
        return 1
    return 0


def one(objs: list[dict], kind: str) -> dict:
    found = [o for o in objs if o.get("kind") == kind]
    if len(found) != 1:
        fail(f"expected one {kind}, found {len(found)}")
        return {}
    return found[0]


def expect(condition: bool, what: str) -> None:
    (ok if condition else fail)(what)


def check_contract(objs: list[dict], kustomization: dict, generated: dict, rendered: bool) -> None:
    before = len(failures)
    deployment = one(objs, "Deployment")
    service = one(objs, "Service")
    monitor = one(objs, "ServiceMonitor")
    policy = one(objs, "NetworkPolicy")
    pvc = one(objs, "PersistentVolumeClaim")
    rule = one(objs, "PrometheusRule")
    if len(failures) > before:
        return
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    containers = pod["containers"]
    expect(spec.get("replicas") == 1, "Deployment: replicas 1 (the API quota is per user and per IP)")
    expect(spec.get("strategy", {}).get("type") == "Recreate", "Deployment: strategy Recreate")
    expect(len(containers) == 1, "Deployment: one container")
    c = containers[0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    expect(ports.get("metrics") == PORT, f"container port 'metrics' is {PORT}")
    probe = lambda name: c.get(name, {}).get("httpGet", {})  # noqa: E731
    expect(probe("livenessProbe").get("path") == "/-/healthy", "livenessProbe on /-/healthy")
    expect(probe("readinessProbe").get("path") == "/-/ready", "readinessProbe on /-/ready")
    res = c.get("resources", {})
    expect(all(res.get(k, {}).get(r) for k in ("requests", "limits") for r in ("cpu", "memory")),
           "resources: cpu and memory requests and limits")
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "runAsNonRoot")
    expect(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    expect(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    expect(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    expect((csc.get("seccompProfile") or psc.get("seccompProfile", {})).get("type") == "RuntimeDefault",
           "seccompProfile RuntimeDefault")
    expect(pod.get("automountServiceAccountToken") is False, "no service account token mounted")

    # The mounts against what config.yml and the image expect.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    expect(f"--config.file={CONFIG_PATH}" in c.get("args", []), f"args: --config.file={CONFIG_PATH}")
    config_mount = mounts.get(CONFIG_PATH, {})
    config_volume = volumes.get(config_mount.get("name"), {}).get("configMap", {})
    config_names = {name for (name, key) in generated}
    if rendered:
        expect(any(config_volume.get("name", "").startswith(n + "-") for n in config_names),
               f"{CONFIG_PATH} comes from the generated ConfigMap (name with content hash)")
    else:
        expect(config_volume.get("name") in config_names, f"{CONFIG_PATH} comes from the generated ConfigMap")
    expect(config_mount.get("subPath") in {key for (_, key) in generated},
           f"the ConfigMap key mounted at {CONFIG_PATH} (subPath) is a generated one")
    config_file = next(iter(generated.values()), None)
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file else {}
    creds = config.get("credentials", {})
    secret_examples = [o for o in load_all(HERE / "secret.example.yaml") if o.get("kind") == "Secret"]
    secret_keys = set(secret_examples[0].get("stringData", {})) | set(secret_examples[0].get("data", {})) \
        if secret_examples else set()
    secret_name = secret_examples[0]["metadata"]["name"] if secret_examples else None
    for key in ("secret_key_file", "security_token_file", "token_file"):
        if key not in creds:
            continue
        directory, filename = os.path.split(creds[key])
        mount = mounts.get(directory, {})
        secret = volumes.get(mount.get("name"), {}).get("secret", {})
        expect(secret.get("secretName") == secret_name and filename in secret_keys,
               f"config {key} {creds[key]}: key '{filename}' of Secret {secret_name} mounted at {directory}")
    for env in c.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            expect(ref["name"] == secret_name and ref["key"] in secret_keys,
                   f"env {env['name']}: key '{ref['key']}' of Secret {secret_name}")
    for var in re.findall(r"\$\{(\w+)", yaml.safe_dump(config)):
        expect(any(e["name"] == var for e in c.get("env", [])), f"config.yml's ${{{var}}} is set in the container")
    state_dir = os.path.dirname(config.get("state_file", "")) if config.get("state_file") else None
    state_volume = volumes.get(mounts.get(state_dir, {}).get("name"), {})
    expect(bool(state_dir) and state_volume.get("persistentVolumeClaim", {}).get("claimName")
           == pvc["metadata"]["name"], f"state_file {config.get('state_file')} is on the PVC")
    expect(not mounts.get(state_dir, {}).get("readOnly"), "the state volume is writable")

    # Service, ServiceMonitor, NetworkPolicy.
    labels = spec["template"]["metadata"]["labels"]
    selects = lambda sel: all(labels.get(k) == v for k, v in sel.items())  # noqa: E731
    sport = [p for p in service["spec"]["ports"] if p.get("name") == "metrics"]
    expect(bool(sport) and sport[0]["port"] == PORT and sport[0].get("targetPort") in (PORT, "metrics")
           and selects(service["spec"]["selector"]), f"Service port 'metrics' {PORT} selects the pod")
    expect(all(e.get("port") == "metrics" for e in monitor["spec"]["endpoints"])
           and all(service["metadata"].get("labels", {}).get(k) == v
                   for k, v in monitor["spec"]["selector"].get("matchLabels", {}).items()),
           "ServiceMonitor selects the Service and scrapes port 'metrics'")
    expect(selects(policy["spec"]["podSelector"].get("matchLabels", {}))
           and set(policy["spec"].get("policyTypes", [])) == {"Ingress", "Egress"},
           "NetworkPolicy applies to the pod, ingress and egress")
    in_ports = {p.get("port") for r in policy["spec"].get("ingress", []) for p in r.get("ports", [])}
    out_ports = {(p.get("protocol", "TCP"), p.get("port"))
                 for r in policy["spec"].get("egress", []) for p in r.get("ports", [])}
    expect(in_ports == {PORT} and all(r.get("from") for r in policy["spec"]["ingress"]),
           f"NetworkPolicy ingress: port {PORT} only, from selected sources only")
    expect(out_ports == {("UDP", 53), ("TCP", 53), ("TCP", 443)}, "NetworkPolicy egress: DNS and HTTPS only")

    # honorLabels: the exporter's `namespace` label (the SWR namespace) must
    # not be renamed exported_namespace in favour of the pod's namespace.
    expect(all(e.get("honorLabels") is True for e in monitor["spec"]["endpoints"]),
           "ServiceMonitor: honorLabels true on every endpoint (keeps the exporter's namespace label)")
    pod_monitor = one(load_all(HERE / "podmonitor.yaml"), "PodMonitor")
    if pod_monitor:
        endpoints = pod_monitor["spec"]["podMetricsEndpoints"]
        expect(all(e.get("honorLabels") is True for e in endpoints),
               "PodMonitor (podmonitor.yaml): honorLabels true on every endpoint")
        expect(all(e.get("port") == "metrics" and e.get("path", "/metrics") == "/metrics" for e in endpoints)
               and selects(pod_monitor["spec"]["selector"].get("matchLabels", {})),
               "PodMonitor (podmonitor.yaml) selects the pod and scrapes its port 'metrics'")

    alerts = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    expect(rule.get("spec") == alerts, "PrometheusRule spec equals deploy/prometheus/alerts.yml")

    # The dashboard ConfigMap: the sidecar's label, and the JSON unchanged
    # (generate-dashboard-configmap.py writes it; an edit of one without the
    # other fails here).
    dashboards = [o for o in objs if o.get("kind") == "ConfigMap"
                  and o.get("metadata", {}).get("name") == DASHBOARD_CONFIGMAP]
    expect(len(dashboards) == 1, f"one ConfigMap {DASHBOARD_CONFIGMAP} (grafana-dashboard.yaml) is applied")
    if dashboards:
        cm = dashboards[0]
        expect(cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1",
               f'ConfigMap {DASHBOARD_CONFIGMAP}: label grafana_dashboard: "1" (kube-prometheus-stack sidecar)')
        expect(cm.get("data", {}) == {DASHBOARD.name: DASHBOARD.read_text(encoding="utf-8")},
               f"ConfigMap {DASHBOARD_CONFIGMAP}: data.{DASHBOARD.name} is {DASHBOARD.relative_to(REPO)} byte for byte "
               "(else run deploy/kubernetes/generate-dashboard-configmap.py)")


def check_config(binary: Path, generated: dict) -> None:
    if not os.access(binary, os.X_OK):
        fail(f"no executable at {binary}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp, "secrets")
        secrets.mkdir()
        for name in ("secret-key", "security-token", "token"):
            (secrets / name).write_text("check-secret\n", encoding="utf-8")
        for (_, key), path in generated.items():
            text = path.read_text(encoding="utf-8").replace("/etc/hss-swr-exporter/secrets/", f"{secrets}/")
            copy = Path(tmp, key)
            copy.write_text(text, encoding="utf-8")
            env = dict(os.environ, HSS_ACCESS_KEY="CHECKAK")
            done = subprocess.run([str(binary), "check-config", "--config.file", str(copy)],
                                  capture_output=True, text=True, env=env)
            expect(done.returncode == 0,
                   f"hss-swr-exporter check-config {path.relative_to(REPO)}"
                   + ("" if done.returncode == 0 else f": {(done.stderr or done.stdout).strip()}"))


if __name__ == "__main__":
    sys.exit(main())
