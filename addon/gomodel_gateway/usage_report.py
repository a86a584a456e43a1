"""The usage report's pure parts: reading --since and --by, the grouping query, the table.

The query is built only from whitelisted column names; the one value in it (the start time) is a
parameter. Days are UTC days on both databases.
"""

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .ledger_location import Dialect

GROUP_COLUMNS = ("key", "model", "provider", "day", "endpoint", "requested_model", "gateway")
DEFAULT_GROUP_BY = ("key", "model", "provider")
DAY_EXPRESSIONS: Mapping[Dialect, str] = {
    "sqlite": "date(\"time\", 'unixepoch')",
    "postgresql": "to_char(to_timestamp(\"time\") AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
# Sums are cast because PostgreSQL's SUM of a BIGINT is a NUMERIC.
METRICS = (
    ("requests", "COUNT(*)"),
    ("errors", "CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT)"),
    ("tokens_in", "CAST(COALESCE(SUM(tokens_in), 0) AS BIGINT)"),
    ("tokens_out", "CAST(COALESCE(SUM(tokens_out), 0) AS BIGINT)"),
    ("latency_ms_mean", "AVG(latency_ms)"),
)
SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """The report's start in unix seconds: a span back from `now` (90s, 30m, 24h, 7d) or an ISO
    date or time (UTC unless it names a zone)."""
    text = text.strip()
    if match := re.fullmatch(r"(\d+)([smhd])", text):
        return now - int(match[1]) * SINCE_UNITS[match[2]]
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a span like 90s, 30m, 24h or 7d, or a date like 2025-11-01"
        ) from None
    return (start if start.tzinfo else start.replace(tzinfo=UTC)).timestamp()


def parse_group_by(text: str) -> tuple[str, ...]:
    """Comma-separated column names, each one of GROUP_COLUMNS, in the order given."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if unknown := [name for name in names if name not in GROUP_COLUMNS]:
        raise ValueError(
            f"--by: cannot group by {', '.join(unknown)}; choose from {', '.join(GROUP_COLUMNS)}"
        )
    if not names:
        raise ValueError(f"--by: name at least one of {', '.join(GROUP_COLUMNS)}")
    return tuple(dict.fromkeys(names))


def report_query(
    group_by: Sequence[str], since: float, dialect: Dialect
) -> tuple[str, tuple[float]]:
    """SQL and parameters: one row per group, the group columns then METRICS, ordered by group."""
    selected = []
    for name in group_by:
        if name not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {name!r}")
        column = DAY_EXPRESSIONS[dialect] if name == "day" else f'"{name}"'
        selected.append(f'{column} AS "{name}"')
    selected += [f'{expression} AS "{name}"' for name, expression in METRICS]
    positions = ", ".join(str(position) for position in range(1, len(group_by) + 1))
    mark = "?" if dialect == "sqlite" else "%s"
    sql = (
        f'SELECT {", ".join(selected)} FROM gomodel_usage WHERE "time" >= {mark} '
        f"GROUP BY {positions} ORDER BY {positions}"
    )
    return sql, (since,)


def report_rows(group_by: Sequence[str], records: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The query's records as dicts, with plain ints (PostgreSQL's counts may be Decimals)."""
    rows = []
    for record in records:
        groups = dict(zip(group_by, record[: len(group_by)], strict=True))
        requests, errors, tokens_in, tokens_out, latency = record[len(group_by) :]
        rows.append(
            {
                **groups,
                "requests": int(requests),
                "errors": int(errors),
                "tokens_in": int(tokens_in),
                "tokens_out": int(tokens_out),
                "latency_ms_mean": float(latency),
            }
        )
    return rows


def format_table(group_by: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """An aligned table with a total line; text columns left, numbers right."""
    metrics = [name for name, _ in METRICS]
    total = {name: sum(row[name] for row in rows) for name in metrics[:-1]}
    requests = total["requests"]
    weighted = sum(row["latency_ms_mean"] * row["requests"] for row in rows)
    total["latency_ms_mean"] = weighted / requests if requests else math.nan
    body = [[_cell(row[name]) for name in (*group_by, *metrics)] for row in rows]
    body.append(["total", *[""] * (len(group_by) - 1), *[_cell(total[n]) for n in metrics]])
    header = [*group_by, *metrics]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = []
    for line in [header, *body]:
        cells = [
            cell.ljust(width) if i < len(group_by) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.1f}"
    return str(value) if value not in (None, "") else "-"
