"""Tables of metrics: the latest round's (check_status), every round's (show_metrics), and the cross-site
evaluation matrix, one model x site table per metric."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

MEAN_ROW = "(mean)"  # the row of a round's weighted mean; no site name has parentheses


def number(value: Any) -> str:
    """A metric for a table cell: 6 significant digits, '-' when there is none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else escape(str(value))
    return f"{value:.6g}"


def _names(rows: Iterable[Mapping[str, Any] | None]) -> list[str]:
    """Every metric name of `rows`, in the order first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row or {}))
    return list(seen)


def latest_metrics(latest: Mapping[str, Any]) -> RenderableType:
    """check_status: each site's metrics in the latest round that has any, and their weighted mean."""
    sites: Mapping[str, Any] = latest.get("sites") or {}
    mean = latest.get("mean")
    columns = _names([*sites.values(), mean])
    table = Table(title=f"Metrics of round {latest.get('round')}", title_justify="left")
    for column in ("Site", *columns):
        table.add_column(escape(column), justify="left" if column == "Site" else "right")
    for site in sorted(sites):
        table.add_row(escape(site), *(number(sites[site].get(c)) for c in columns))
    if mean:
        table.add_row(f"[bold]{MEAN_ROW}[/bold]", *(f"[bold]{number(mean.get(c))}[/bold]" for c in columns))
    return table


def show_metrics(data: Mapping[str, Any]) -> RenderableType:
    """show_metrics: a table of every round (a row per site, then the round's weighted mean), then the
    cross-site evaluation matrix if the run has one."""
    parts: list[RenderableType] = []
    rounds = data.get("rounds") or []
    if rounds:
        parts.append(rounds_table(data.get("run"), rounds))
    else:
        parts.append(Text(f"run {data.get('run')} has no metrics yet ({data.get('file')})", style="dim"))
    if data.get("skipped_lines"):
        parts.append(Text(f"{data['skipped_lines']} line(s) of {data.get('file')} are not records", style="yellow"))
    matrix = data.get("cross_val")
    if matrix:
        where = data.get("cross_val_file") or "received so far: the evaluation is not done"
        parts.append(Text(f"cross-site evaluation ({where})"))
        parts.extend(cross_val_tables(matrix))
    return Group(*parts)


def rounds_table(run: Any, rounds: list[Mapping[str, Any]]) -> Table:
    """One row per site and round, and a bold row of each round's weighted mean."""
    columns = _names(row for entry in rounds for row in [*(entry.get("sites") or {}).values(), entry.get("mean")])
    table = Table(title=f"Metrics of run {run}, per round", title_justify="left")
    for column in ("Round", "Site", *columns):
        table.add_column(escape(column), justify="left" if column in ("Round", "Site") else "right")
    for entry in rounds:
        sites: Mapping[str, Any] = entry.get("sites") or {}
        for site in sorted(sites):
            table.add_row(str(entry.get("round")), escape(site), *(number(sites[site].get(c)) for c in columns))
        mean = entry.get("mean")
        if mean:
            cells = (f"[bold]{number(mean.get(c))}[/bold]" for c in columns)
            table.add_row(str(entry.get("round")), f"[bold]{MEAN_ROW}[/bold]", *cells)
        table.add_section()
    return table


def cross_val_tables(matrix: Mapping[str, Any]) -> list[Table]:
    """The matrix {data_site: {model: {metric: value}}} as one table per metric: a row per model, a column per
    data site (where the model was validated)."""
    sites = sorted(matrix)
    models = sorted(
        {model for site in sites for model in matrix[site] or {}}, key=lambda m: (not m.startswith("SRV_"), m)
    )
    metrics = _names(cell for site in sites for cell in (matrix[site] or {}).values())
    tables = []
    for metric in metrics:
        table = Table(title=f"{metric}: model x data site", title_justify="left")
        table.add_column("Model")
        for site in sites:
            table.add_column(escape(site), justify="right")
        for model in models:
            cells = (number(((matrix[site] or {}).get(model) or {}).get(metric)) for site in sites)
            table.add_row(escape(model), *cells)
        tables.append(table)
    return tables
