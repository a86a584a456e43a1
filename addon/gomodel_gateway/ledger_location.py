"""Where the usage ledger lives: a SQLite file or a PostgreSQL URL, parsed once, shown without
its password."""

import re
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

DEFAULT_USAGE_DB = "~/.gomodel/usage.db"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

Dialect = Literal["sqlite", "postgresql"]


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a password= parameter) shown as ***."""
    scheme, _, rest = url.partition("://")
    location, query_mark, query = rest.partition("?")
    userinfo, at, hosts = location.rpartition("@")
    if ":" in userinfo:
        location = userinfo.split(":", 1)[0] + ":***" + at + hosts
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", query)
    return f"{scheme}://{location}{query_mark}{query}"


@dataclass(frozen=True)
class LedgerLocation:
    """Where a ledger lives: a SQLite file (absolute path) or a PostgreSQL URL."""

    dialect: Dialect
    location: str

    def __str__(self) -> str:
        return self.location if self.dialect == "sqlite" else redact_url(self.location)

    def __repr__(self) -> str:
        return f"LedgerLocation({self.dialect}, {self})"

    @property
    def mark(self) -> str:
        """The driver's parameter placeholder."""
        return "?" if self.dialect == "sqlite" else "%s"

    def scrub(self, text: str) -> str:
        """An error message fit for a log line: on one line, with no password in it."""
        text = " ".join(str(text).split())
        if self.dialect == "postgresql":
            for secret in postgres_passwords(self.location):
                text = text.replace(secret, "***")
        return text


def postgres_passwords(url: str) -> set[str]:
    """Every form in which the URL's passwords could appear in a message."""
    secrets = set()
    with suppress(ValueError):
        if password := urlsplit(url).password:
            secrets |= {password, unquote(password)}
    for value in re.findall(r"(?i)(?:^|[?&])password=([^&]*)", url.partition("?")[2]):
        secrets |= {value, unquote(value)}
    return {secret for secret in secrets if secret}


def parse_target(text: str) -> LedgerLocation:
    """A file path (~ allowed) or a postgresql:// or postgres:// URL; ValueError says why not."""
    text = text.strip()
    if not text:
        raise ValueError("the usage ledger needs a file path or a postgresql:// URL")
    if text.startswith(POSTGRES_SCHEMES):
        check_postgres_url(text)
        return LedgerLocation("postgresql", text)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise ValueError(
            f"{redact_url(text)!r} is neither a file path nor a postgresql:// or postgres:// URL"
        )
    path = Path(text).expanduser().absolute()
    if path.is_dir():
        raise ValueError(f"{path} is a directory; name a file in it, e.g. {path / 'usage.db'}")
    return LedgerLocation("sqlite", str(path))


def check_postgres_url(url: str) -> None:
    try:
        # Imported here: only a PostgreSQL ledger needs the driver.
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ValueError(
            "a PostgreSQL usage ledger needs psycopg: pip install 'psycopg[binary]>=3.2,<4'"
        ) from None
    try:
        conninfo_to_dict(url)
    except psycopg.Error as error:
        where = LedgerLocation("postgresql", url)
        reason = where.scrub(str(error))
        raise ValueError(f"{where}: not a valid PostgreSQL URL: {reason}") from None
