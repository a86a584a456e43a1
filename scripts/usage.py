"""Report the usage ledger: requests, errors and tokens per client key, model and provider.

    scripts/usage                                # ~/.gomodel/usage.db, the last 24 hours
    scripts/usage --since 7d --by key,day        # per key and UTC day
    scripts/usage --db postgresql://gomodel@db.corp/gomodel --since 2025-11-01 --json

Reads the ledger the gateway writes with --set gomodel_usage_db=PATH|URL (a SQLite file or
PostgreSQL). Exit status 2 for a bad option, 1 when the ledger cannot be read.
"""

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addon"))

from gomodel_gateway.ledger_location import DEFAULT_USAGE_DB, parse_target
from gomodel_gateway.ledger_store import LedgerError, read_query
from gomodel_gateway.usage_report import (
    DEFAULT_GROUP_BY,
    GROUP_COLUMNS,
    format_table,
    parse_group_by,
    parse_since,
    report_query,
    report_rows,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db",
        default=DEFAULT_USAGE_DB,
        help=f"a SQLite file or a postgresql:// URL (default: {DEFAULT_USAGE_DB})",
    )
    parser.add_argument(
        "--since", default="24h", help="90s, 30m, 24h, 7d or an ISO date/time, UTC (default: 24h)"
    )
    parser.add_argument(
        "--by",
        default=",".join(DEFAULT_GROUP_BY),
        help=f"columns to group by, comma-separated, of: {', '.join(GROUP_COLUMNS)} "
        f"(default: {','.join(DEFAULT_GROUP_BY)})",
    )
    parser.add_argument("--json", action="store_true", help="a JSON list of rows, not a table")
    args = parser.parse_args()
    try:
        group_by = parse_group_by(args.by)
        since = parse_since(args.since, time.time())
        target = parse_target(args.db)
    except ValueError as error:
        parser.error(str(error))

    sql, params = report_query(group_by, since, target.dialect)
    try:
        rows = report_rows(group_by, read_query(target, sql, params))
    except LedgerError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    if args.json:
        rounded = [{**row, "latency_ms_mean": round(row["latency_ms_mean"], 1)} for row in rows]
        print(json.dumps(rounded, indent=2))
        return 0
    start = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not rows:
        print(f"no usage since {start} in {target}")
        return 0
    print(f"usage since {start}\n")
    print(format_table(group_by, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
