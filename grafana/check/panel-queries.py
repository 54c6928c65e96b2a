#!/usr/bin/env python3
"""Runs every query of the Grafana dashboard against a real Prometheus.

Every panel query must return at least one series (an instant query at the
current time), so no panel of grafana/dashboards/hss-swr-exporter.json is empty
on a working setup; every variable query must return at least one value;
annotation queries must run without error (they may return nothing when
nothing was detected).

Variables are replaced as Grafana replaces "All": `=~"$target"` becomes
`=~".*"`; text-box and constant variables take their default value;
`$__rate_interval` and `$__interval` become 1m, `$__range` 1h.

Usage:
    PROMETHEUS_URL=http://127.0.0.1:9090 grafana/check/panel-queries.py [--dashboard FILE]
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


def collect(dashboard: dict) -> list[tuple[str, str, str]]:
    """(kind, where, expression) for every query; kind is panel, variable or annotation."""
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
                        target.get("expr", "")))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("datasource", {}).get("type") != "prometheus":
            continue
        expr = (annotation.get("target") or {}).get("expr") or annotation.get("expr", "")
        out.append(("annotation", f'annotation "{annotation.get("name", "")}"', expr))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            out.append(("variable", f'variable "{variable.get("name", "")}"', variable_query(variable)))
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
    args = parser.parse_args(argv)

    try:
        dashboard = json.loads(args.dashboard.read_text("utf-8"))
        values = substitutions(dashboard)
        queries = [(kind, where, expr, substitute(expr, values)) for kind, where, expr in collect(dashboard)]
    except (OSError, ValueError, Usage) as error:
        print(f"panel-queries: {args.dashboard}: {error}", file=sys.stderr)
        return 2
    if not any(kind == "panel" for kind, *_ in queries):
        print(f"panel-queries: {args.dashboard}: no panel queries", file=sys.stderr)
        return 2
    if args.dry_run:
        for kind, where, _, expr in queries:
            print(f"{where}: {expr}")
        return 0

    prometheus = os.environ.get("PROMETHEUS_URL", "").rstrip("/")
    if not prometheus:
        print("panel-queries: set PROMETHEUS_URL (e.g. http://127.0.0.1:9090)", file=sys.stderr)
        return 2

    failures = []
    counts = {"panel": 0, "variable": 0, "annotation": 0}
    for kind, where, original, expr in queries:
        count, detail = run(prometheus, kind, expr)
        counts[kind] += 1
        if count is None:
            failures.append(f"{where}: query failed: {detail}\n    {expr}")
        elif count == 0 and kind != "annotation":
            failures.append(f"{where}: no {detail}\n    {expr}")
        else:
            print(f"ok   {where}: {count} {detail}")
    if failures:
        print(f"\nFAIL: {len(failures)} of {len(queries)} dashboard queries against {prometheus}:")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print(f"OK: {counts['panel']} panel queries, {counts['variable']} variable queries and "
          f"{counts['annotation']} annotation queries of {args.dashboard.name} ran against {prometheus}; "
          f"every panel and variable query returned data")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
