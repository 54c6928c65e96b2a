#!/usr/bin/env python3
"""Runs every query of the Grafana dashboard against a real Prometheus.

Every panel query must return at least one series (an instant query at the
current time), so no panel of grafana/dashboards/hss-swr-exporter.json is empty
on a working setup; every variable query must return at least one value;
annotation queries must run without error (they may return nothing when
nothing was detected).

One exception, explicit and checked: a panel or variable whose description
contains REGISTRY_IMAGES_ONLY ("Empty unless a target uses api:
registry-images.") shows data only targets on `api: registry-images` export
(hss_swr_images_by_severity, the registry_name label). Its queries must run
without error; they must return data too as soon as a registry-images target
exports namespaces (REGISTRY_IMAGES_CONDITION returns series), and may return
nothing otherwise, e.g. with swr-repository targets only. They are not padded
with `or vector(0)`, which would show zeros for data that does not exist.
tests/dashboard.rs checks that the marker is on exactly the panels querying
registry-images-only metrics and on the registry_name variable.

Variables are replaced as Grafana replaces "All": `=~"$job"` becomes
`=~".*"`; text-box and constant variables take their default value;
`$__rate_interval` and `$__interval` become 1m, `$__range` 1h. `--var
NAME=VALUE` picks one value instead (a regular expression for multi-value
variables), e.g. `--var job=hss-swr-exporter` to check the dashboard filtered
to one Prometheus job of several.

Usage:
    PROMETHEUS_URL=http://127.0.0.1:9090 grafana/check/panel-queries.py [--dashboard FILE] [--var NAME=VALUE ...]
    grafana/check/panel-queries.py --dry-run     # print the substituted queries only

tests/e2e/run.py runs it with `--extra-check` while its Prometheus scrapes the
exporter against the simulator. Standard library only. Exit code 0 when every
query passed, 1 otherwise (each failing query is listed), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "hss-swr-exporter.json"

BUILTINS = {
    "__rate_interval": "1m",
    "__rate_interval_ms": "60000",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $name, ${name}, ${name:format}, [[name]], [[name:format]]
REFERENCE = re.compile(r"\$\{([^}:]+)(?::[^}]*)?\}|\[\[([^\]:]+)(?::[^\]]*)?\]\]|\$(\w+)")
LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),)?\s*([\w.]+)\s*\)\s*$", re.S)
QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)

# Marker in a panel's or variable's description (same text in tests/dashboard.rs).
REGISTRY_IMAGES_ONLY = "Empty unless a target uses api: registry-images."
# Namespace series of targets on api: registry-images: when there are any,
# the marked queries must return data as well.
REGISTRY_IMAGES_CONDITION = 'hss_swr_images and on(target) hss_swr_target_info{api="registry-images"}'


class Usage(Exception):
    pass


def variable_query(variable: dict) -> str:
    query = variable.get("query", "")
    if isinstance(query, dict):
        query = query.get("query", "")
    return query or ""


def substitutions(dashboard: dict) -> dict[str, str]:
    values = dict(BUILTINS)
    for variable in dashboard.get("templating", {}).get("list", []):
        name, kind = variable.get("name", ""), variable.get("type", "")
        if kind in ("query", "custom") and (variable.get("multi") or variable.get("includeAll")):
            values[name] = ".*"
        elif kind in ("textbox", "constant", "custom", "interval"):
            values[name] = variable_query(variable).split(",")[0].strip()
        elif kind == "datasource":
            values[name] = "prometheus"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise Usage(f"undefined variable ${name} in: {expr}")
        return values[name]

    return REFERENCE.sub(replace, expr)


def registry_images_only(item: dict) -> bool:
    return REGISTRY_IMAGES_ONLY in (item.get("description") or "")


def collect(dashboard: dict) -> list[tuple[str, str, str, bool]]:
    """(kind, where, expression, registry-images only) for every query; kind is
    panel, variable or annotation."""
    out = []
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    for panel in panels:
        for target in panel.get("targets", []):
            if target.get("hide"):
                continue
            out.append(("panel", f'panel "{panel.get("title", "")}" query {target.get("refId", "?")}',
                        target.get("expr", ""), registry_images_only(panel)))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("datasource", {}).get("type") != "prometheus":
            continue
        expr = (annotation.get("target") or {}).get("expr") or annotation.get("expr", "")
        out.append(("annotation", f'annotation "{annotation.get("name", "")}"', expr, False))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            out.append(("variable", f'variable "{variable.get("name", "")}"', variable_query(variable),
                        registry_images_only(variable)))
    return out


def get(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:  # Prometheus explains 400/422 in the body
        body = error.read().decode("utf-8", "replace")
        try:
            return json.loads(body)
        except ValueError:
            return {"status": "error", "error": f"HTTP {error.code}: {body[:300]}"}
    except (urllib.error.URLError, OSError, ValueError) as error:
        return {"status": "error", "error": str(error)}


def run(prometheus: str, kind: str, expr: str) -> tuple[int | None, str]:
    """(number of results, detail); None results when the query failed."""
    if kind == "variable":
        match = LABEL_VALUES.match(expr)
        if match:
            selector, label = match.group(1), match.group(2)
            params = {"match[]": selector.strip()} if selector else {}
            url = f"{prometheus}/api/v1/label/{urllib.parse.quote(label)}/values"
            if params:
                url += "?" + urllib.parse.urlencode(params)
            answer = get(url)
            if answer.get("status") != "success":
                return None, answer.get("error", str(answer))
            return len(answer.get("data") or []), f"{label} values"
        match = QUERY_RESULT.match(expr)
        if match:
            expr = match.group(1)
    answer = get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if answer.get("status") != "success":
        return None, answer.get("error", str(answer))
    data = answer.get("data", {})
    if data.get("resultType") in ("scalar", "string"):
        return 1, data["resultType"]
    return len(data.get("result") or []), "series"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the substituted queries without running them")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="value of a dashboard variable instead of All (repeatable)")
    args = parser.parse_args(argv)

    try:
        dashboard = json.loads(args.dashboard.read_text("utf-8"))
        values = substitutions(dashboard)
        for pair in args.var:
            name, sep, value = pair.partition("=")
            if not sep or name not in values or name in BUILTINS:
                raise Usage(f"--var {pair}: not NAME=VALUE for a variable of the dashboard")
            values[name] = value
        queries = [(kind, where, substitute(expr, values), optional)
                   for kind, where, expr, optional in collect(dashboard)]
    except (OSError, ValueError, Usage) as error:
        print(f"panel-queries: {args.dashboard}: {error}", file=sys.stderr)
        return 2
    if not any(kind == "panel" for kind, *_ in queries):
        print(f"panel-queries: {args.dashboard}: no panel queries", file=sys.stderr)
        return 2
    if args.dry_run:
        for kind, where, expr, optional in queries:
            print(f"{where}{' (registry-images only)' if optional else ''}: {expr}")
        return 0

    prometheus = os.environ.get("PROMETHEUS_URL", "").rstrip("/")
    if not prometheus:
        print("panel-queries: set PROMETHEUS_URL (e.g. http://127.0.0.1:9090)", file=sys.stderr)
        return 2

    failures = []
    counts = {"panel": 0, "variable": 0, "annotation": 0}
    # Whether registry-images-only queries must return data too.
    registry_images = None
    if any(optional for *_, optional in queries):
        count, detail = run(prometheus, "panel", REGISTRY_IMAGES_CONDITION)
        if count is None:
            failures.append(f"registry-images condition: query failed: {detail}\n    {REGISTRY_IMAGES_CONDITION}")
        else:
            registry_images = count > 0
            print(f"info registry-images targets export {count} namespace series: registry-images-only "
                  f"queries {'must return data' if registry_images else 'may be empty'}")
    skipped = 0
    for kind, where, expr, optional in queries:
        count, detail = run(prometheus, kind, expr)
        counts[kind] += 1
        if count is None:
            failures.append(f"{where}: query failed: {detail}\n    {expr}")
        elif count == 0 and optional and registry_images is False:
            skipped += 1
            print(f"ok   {where}: 0 {detail} (registry-images only, and no target uses api: registry-images)")
        elif count == 0 and kind != "annotation":
            why = " although registry-images targets export namespaces" if optional else ""
            failures.append(f"{where}: no {detail}{why}\n    {expr}")
        else:
            print(f"ok   {where}: {count} {detail}")
    if failures:
        print(f"\nFAIL: {len(failures)} of {len(queries)} dashboard queries against {prometheus}:")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print(f"OK: {counts['panel']} panel queries, {counts['variable']} variable queries and "
          f"{counts['annotation']} annotation queries of {args.dashboard.name} ran against {prometheus}; "
          f"every panel and variable query returned data"
          + (f" except {skipped} registry-images-only queries (no registry-images target)" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
