"""Rendering a :class:`~mpfault._contract.model.Report`: the matrix and the JSON.

Both are derived from the same report, and :func:`report_from_json` rebuilds a report
from the JSON, so ``render_table(report_from_json(report_to_json(r)))`` is the table of
``r``: the JSON and the table cannot disagree.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from typing import Any

from .model import NO_QUEUE, Figure, Report, Result
from .registry import all_checks, get_check

__all__ = [
    "SCHEMA",
    "format_figure",
    "render_compare",
    "render_table",
    "report_from_json",
    "report_to_json",
]

#: The ``schema`` value of the JSON document.
SCHEMA = "mpfault-contract/2"

#: What the cells of the matrix mean (printed under it).
LEGEND = (
    "Cells: pass; FAIL = a documented promise broken; differs = a difference from CPython's "
    "behaviour that the docs allow, or an implementation detail that differs (not a "
    "failure); n/a = not applicable here (the reason is in the note); ERROR = the contract "
    "itself broke (never counted against the queue). [n] refers to a note. The figure is "
    "the check's timing: a timeout's overshoot, or a latency or elapsed time (all figures "
    "are in the JSON)."
)
_LABEL = {"pass": "pass", "fail": "FAIL", "differs": "differs", "skip": "n/a", "error": "ERROR"}
_CELL = 17


def format_figure(value: Figure) -> str:
    """A figure for a matrix cell: seconds as ms/s, other values as they are."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if abs(value) < 1:
            return f"{value * 1000:+.1f}ms" if value < 0 else f"{value * 1000:.1f}ms"
        return f"{value:.2f}s"
    return str(value)


def _cell(result: Result, note: int | None) -> str:
    text = _LABEL[result.status]
    if note is not None:
        text += f"[{note}]"
    headline = result.check.headline
    if headline and headline in result.figures and result.status in ("pass", "fail", "differs"):
        text += " " + format_figure(result.figures[headline])
    return text[:_CELL]


def _note_text(result: Result) -> str:
    if result.status == "skip":
        return f"n/a: {result.observed}"
    return f"{_LABEL[result.status]} {result.test_id}: {result.observed}"


def render_table(report: Report) -> str:
    """The matrix (checks x start methods), its notes and the summary, as text."""
    lines = [
        f"mpfault contract: {report.implementation} {report.python} on {report.platform}, "
        f"queues: {report.target}, timeout tolerance {report.tolerance:g} s",
    ]
    prov = report.provider
    if prov and report.target != "stdlib":
        lines.append(
            f"provider: {prov.get('name')} from {prov.get('package')} {prov.get('version')}, "
            f"behaves like {prov.get('kind_name')} ({prov.get('kind_reason')}), children "
            f"from {prov.get('context')}"
            + (f", made by {prov['call']}" if prov.get("call") else "")
        )
    lines.append("")
    methods = report.methods
    by_cell: dict[tuple[str, str], dict[str, Result]] = {}
    order: list[tuple[str, str]] = []
    for r in report.results:
        key = (r.check.id, r.queue_kind)
        if key not in by_cell:
            by_cell[key] = {}
            order.append(key)
        by_cell[key][r.method] = r
    index = {c.id: n for n, c in enumerate(all_checks())}
    order.sort(key=lambda k: (index.get(k[0], len(index)), _pos(report, k)))
    notes: dict[str, int] = {}
    header = f"{'row':>3}  {'check':<40} {'type':<6} {'queue':<6}" + "".join(
        f" {m:<{_CELL}}" for m in methods
    )
    lines.append(header.rstrip())
    lines.append("-" * len(header.rstrip()))
    previous = None
    for check_id, kind in order:
        cells = by_cell[(check_id, kind)]
        check = next(iter(cells.values())).check
        first = check_id != previous
        previous = check_id
        row = f"{check.row:>3}" if first else "   "
        name = f"{check.slug[:40]:<40}" if first else " " * 40
        kind_type = "doc" if check.kind == "documented" else "detail"
        line = f"{row}  {name} {(kind_type if first else ''):<6} {kind:<6}"
        for m in methods:
            cell = cells.get(m)
            if cell is None:
                line += f" {'':<{_CELL}}"
                continue
            r = cell
            note = None
            if r.status != "pass":
                text = _note_text(r)
                note = notes.setdefault(text, len(notes) + 1)
            line += f" {_cell(r, note):<{_CELL}}"
        lines.append(line.rstrip())
    lines += ["", *textwrap.wrap(LEGEND, 100)]
    if notes:
        lines += ["", "Notes:"]
        lines += [f"[{n}] {text}" for text, n in notes.items()]
    counts = report.counts()
    lines.append("")
    timing = ", ".join(
        f"{m} {sum(1 for r in report.results if r.method == m)} cells in "
        f"{report.durations.get(m, 0.0):.1f} s"
        for m in methods
    )
    lines.append(f"Ran: {timing}")
    lines.append(
        f"Results: {counts['pass']} pass, {counts['fail']} fail, {counts['differs']} differs "
        f"(allowed by the docs, not a failure), {counts['skip']} not applicable, "
        f"{counts['error']} contract error (not counted against the queue)"
    )
    if report.ok:
        lines.append("Verdict: OK - no documented behaviour violated")
    else:
        lines.append(
            f"Verdict: FAILED - {counts['violations']} violation(s) of documented behaviour"
        )
    return "\n".join(lines) + "\n"


def _pos(report: Report, key: tuple[str, str]) -> int:
    kinds = [*report.kinds, NO_QUEUE]
    return kinds.index(key[1]) if key[1] in kinds else len(kinds)


def report_to_json(report: Report) -> dict[str, Any]:
    """The report as a JSON-ready dict (schema :data:`SCHEMA`)."""
    seen: dict[str, Any] = {}
    for r in report.results:
        seen.setdefault(r.check.id, r.check.describe())
    return {
        "schema": SCHEMA,
        "python": report.python,
        "implementation": report.implementation,
        "platform": report.platform,
        "target": report.target,
        "provider": dict(report.provider),
        "package": report.provider.get("package"),
        "version": report.provider.get("version"),
        "tolerance": report.tolerance,
        "start_methods": list(report.methods),
        "queue_kinds": list(report.kinds),
        "durations": dict(report.durations),
        "summary": report.counts(),
        "ok": report.ok,
        "checks": list(seen.values()),
        "results": [r.to_json() for r in report.results],
    }


def report_from_json(data: Mapping[str, Any]) -> Report:
    """Rebuild a :class:`Report` from :func:`report_to_json` output.

    Raises:
        ValueError: if the schema is not :data:`SCHEMA`.
        KeyError: if a result names a check this version does not have.
    """
    if data.get("schema") != SCHEMA:
        raise ValueError(f"not an {SCHEMA} document: schema {data.get('schema')!r}")
    results = [
        Result(
            check=get_check(r["check"]),
            queue_kind=r["queue_kind"],
            method=r["start_method"],
            status=r["status"],
            observed=r["observed"],
            figures=dict(r["figures"]),
            duration=float(r["duration"]),
        )
        for r in data["results"]
    ]
    return Report(
        results=results,
        methods=list(data["start_methods"]),
        kinds=list(data["queue_kinds"]),
        target=data["target"],
        provider=dict(data.get("provider") or {}),
        tolerance=float(data["tolerance"]),
        python=data["python"],
        implementation=data["implementation"],
        platform=data["platform"],
        durations={k: float(v) for k, v in data["durations"].items()},
    )


def _verdicts(data: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, Mapping[str, Any]]]]:
    """Per check id: its title and, per start method, the JSON result."""
    titles = {c["id"]: c["title"] for c in data.get("checks", [])}
    out: dict[str, tuple[str, dict[str, Mapping[str, Any]]]] = {}
    for r in data["results"]:
        entry = out.setdefault(r["check"], (titles.get(r["check"], ""), {}))
        entry[1][r["start_method"]] = r
    return out


def _summary(per_method: Mapping[str, Mapping[str, Any]]) -> str:
    labels = {m: str(_LABEL.get(r["status"], r["status"])) for m, r in per_method.items()}
    if len(set(labels.values())) == 1:
        return next(iter(labels.values()))
    return " ".join(f"{m}:{v}" for m, v in labels.items())


def render_compare(docs: list[Mapping[str, Any]], names: list[str] | None = None) -> str:
    """The rows where the reports *docs* (:func:`report_to_json` output) differ.

    One column per report, headed by its queue, package and version; a row is shown
    when its verdicts are not the same in every report.  Under the table each shown
    row's evidence (what was observed) is listed per report.

    Raises:
        ValueError: if a document is not of schema :data:`SCHEMA`.
    """
    for n, doc in enumerate(docs):
        if doc.get("schema") != SCHEMA:
            where = names[n] if names else f"report {n + 1}"
            raise ValueError(f"{where} is not an {SCHEMA} document: schema {doc.get('schema')!r}")
    heads = []
    for doc in docs:
        prov = doc.get("provider") or {}
        heads.append(
            f"{prov.get('name', doc.get('target'))} ({prov.get('package')} {prov.get('version')})"
        )
    per_doc = [_verdicts(doc) for doc in docs]
    index = {c.id: n for n, c in enumerate(all_checks())}
    ids = sorted({i for v in per_doc for i in v}, key=lambda i: (index.get(i, len(index)), i))
    width = max(24, *(len(h) for h in heads))
    width = min(width, 46)
    lines = [
        "mpfault contract comparison: the rows where the verdicts differ",
        "",
        f"{'check':<44}" + "".join(f" {h[:width]:<{width}}" for h in heads),
    ]
    lines.append("-" * len(lines[-1]))
    evidence: list[str] = []
    shown = 0
    for check_id in ids:
        cells = []
        for v in per_doc:
            entry = v.get(check_id)
            cells.append("-" if entry is None else _summary(entry[1]))
        if len(set(cells)) == 1:
            continue
        shown += 1
        lines.append(f"{check_id[:44]:<44}" + "".join(f" {c[:width]:<{width}}" for c in cells))
        title = next((v[check_id][0] for v in per_doc if check_id in v), "")
        evidence.append(f"{check_id}: {title}")
        for head, v in zip(heads, per_doc, strict=True):
            entry = v.get(check_id)
            if entry is None:
                evidence.append(f"    {head}: not run")
                continue
            for method, r in entry[1].items():
                label = _LABEL.get(r["status"], r["status"])
                evidence.append(f"    {head} [{method}] {label}: {r['observed']}")
    if not shown:
        lines.append("(no row differs)")
    lines.append("")
    lines.append(f"{shown} row(s) differ among {len(docs)} report(s)")
    if evidence:
        lines += ["", "Evidence:", *evidence]
    return "\n".join(lines) + "\n"
