"""The lock files agree with requirements*.txt: every requirement pinned inside its range with its
extras, every pin hashed, nothing unpinned, every dependency of a pin pinned, and the runtime lock
the dev lock's subset at the same versions and artifacts. scripts/lock rewrites them."""

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
RUNTIME = (REPO / "requirements.txt", REPO / "requirements.lock")
DEV = (REPO / "requirements-dev.txt", REPO / "requirements-dev.lock")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}$")


def environment(platform: str, python: str) -> dict[str, str]:
    """Marker variables of CPython `python` on `platform` (linux, darwin or win32)."""
    system = {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}[platform]
    return default_environment() | {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": platform,
        "platform_system": system,
        "os_name": "nt" if platform == "win32" else "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


# Where the lock must install: what scripts/setup accepts, on the platforms mitmproxy ships for.
ENVIRONMENTS = [
    environment(platform, python)
    for platform in ("linux", "darwin", "win32")
    for python in ("3.12", "3.13")
]


def holds(marker: Marker | None, env: dict[str, str], extras: frozenset[str] = frozenset()) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate(env | {"extra": extra}) for extra in extras or {""})


@dataclass(frozen=True)
class Pin:
    requirement: Requirement  # name[extras]==version ; marker
    hashes: tuple[str, ...]

    @property
    def name(self) -> NormalizedName:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> Version:
        return Version(next(iter(self.requirement.specifier)).version)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first physical line number, text) of each line: comments cut, continuations joined."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*", "", raw).rstrip()
        start, joined = pending or (number, "")
        joined += " " + line.removesuffix("\\")
        pending = (start, joined) if line.endswith("\\") else None
        if pending is None and joined.strip():
            lines.append((start, joined.strip()))
    if pending is not None:
        lines.append((pending[0], pending[1].strip()))
    return lines


def read_lock(text: str) -> tuple[dict[NormalizedName, Pin], list[str]]:
    """The pins of a lock file, and what is wrong with any of its lines."""
    pins: dict[NormalizedName, Pin] = {}
    problems: list[str] = []
    for number, line in logical_lines(text):
        words = line.split(" --")
        requirement_text, options = words[0].strip(), [f"--{word.strip()}" for word in words[1:]]
        try:
            requirement = Requirement(requirement_text)
        except InvalidRequirement:
            problems.append(f"line {number}: not a pin: {line[:80]}")
            continue
        specifiers = list(requirement.specifier)
        if (
            requirement.url
            or len(specifiers) != 1
            or specifiers[0].operator != "=="
            or "*" in specifiers[0].version
        ):
            problems.append(f"line {number}: {requirement_text} is not pinned to one version")
            continue
        hashes = tuple(option for option in options if HASH.match(option))
        if len(hashes) != len(options) or not hashes:
            problems.append(f"line {number}: {requirement_text} needs --hash=sha256: and only that")
            continue
        pin = Pin(requirement, hashes)
        if pin.name in pins:
            problems.append(f"line {number}: {pin.name} is pinned twice")
        pins[pin.name] = pin
    return pins, problems


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements of a requirements file, following -r."""
    requirements: list[Requirement] = []
    for _, line in logical_lines(path.read_text()):
        if line.startswith(("-r ", "--requirement ")):
            requirements += read_requirements(path.parent / line.split(maxsplit=1)[1])
        else:
            requirements.append(Requirement(line))  # any other option fails here, on purpose
    return requirements


def unmet(
    requirement: Requirement, pins: dict[NormalizedName, Pin], where: list[dict[str, str]]
) -> list[str]:
    """Why the pins do not meet `requirement` in the environments `where` it applies."""
    pin = pins.get(canonicalize_name(requirement.name))
    if not where:
        return []
    if pin is None:
        return [f"{requirement} is not pinned"]
    found = []
    if not requirement.specifier.contains(pin.version, prereleases=True):
        found.append(f"{requirement} is pinned at {pin.version}, outside its range")
    if missing := requirement.extras - pin.requirement.extras:
        found.append(f"{requirement} is pinned without the extras {sorted(missing)}")
    if any(not holds(pin.requirement.marker, env) for env in where):
        found.append(f"{requirement} is pinned only where {pin.requirement.marker}")
    return found


def disagreements(requirements: list[Requirement], pins: dict[NormalizedName, Pin]) -> list[str]:
    """Where the pins do not meet the requirements, in the environments the lock serves."""
    return [
        problem
        for requirement in requirements
        for problem in unmet(
            requirement, pins, [env for env in ENVIRONMENTS if holds(requirement.marker, env)]
        )
    ]


def lock(path: Path) -> dict[NormalizedName, Pin]:
    pins, problems = read_lock(path.read_text())
    assert problems == [], f"{path.name}: {problems}"
    return pins


@pytest.mark.parametrize(("requirements", "lock_file"), [RUNTIME, DEV], ids=["runtime", "dev"])
def test_every_requirement_is_pinned_inside_its_range_with_its_extras(
    requirements: Path, lock_file: Path
) -> None:
    wanted = read_requirements(requirements)
    assert len(wanted) >= 6
    assert disagreements(wanted, lock(lock_file)) == []


@pytest.mark.parametrize("lock_file", [RUNTIME[1], DEV[1]], ids=["runtime", "dev"])
def test_every_line_is_a_pin_with_hashes(lock_file: Path) -> None:
    pins = lock(lock_file)
    assert len(pins) >= 20
    assert all(pin.hashes for pin in pins.values())


def test_the_runtime_lock_is_the_dev_locks_subset_at_the_same_versions_and_artifacts() -> None:
    runtime, dev = lock(RUNTIME[1]), lock(DEV[1])
    differing = {
        name: (str(pin.requirement), dev[name].requirement if name in dev else None)
        for name, pin in runtime.items()
        if name not in dev or (pin.version, pin.hashes) != (dev[name].version, dev[name].hashes)
    }
    assert differing == {}


@pytest.mark.parametrize("lock_file", [RUNTIME[1], DEV[1]], ids=["runtime", "dev"])
def test_every_dependency_of_a_pin_is_pinned_inside_its_range(lock_file: Path) -> None:
    # What each pinned package needs, with its pinned extras, as its metadata says: read from
    # this venv, which scripts/setup --dev installed from the dev lock.
    pins = lock(lock_file)
    found, checked = [], 0
    for pin in pins.values():
        try:
            installed = metadata.distribution(pin.name)
        except metadata.PackageNotFoundError:
            continue  # a package for another platform (pydivert, mitmproxy-macos...)
        assert Version(installed.version) == pin.version, f"{pin.name}: run scripts/setup --dev"
        extras = frozenset(pin.requirement.extras)
        pinned_where = [env for env in ENVIRONMENTS if holds(pin.requirement.marker, env)]
        for dependency in map(Requirement, installed.requires or []):
            where = [env for env in pinned_where if holds(dependency.marker, env, extras)]
            found += [f"{pin.name} needs: {problem}" for problem in unmet(dependency, pins, where)]
            checked += bool(where)
    assert found == []
    assert checked >= 60


def test_lock_files_name_the_script_that_writes_them() -> None:
    for lock_file in (RUNTIME[1], DEV[1]):
        assert "scripts/lock" in lock_file.read_text().splitlines()[1]


# The checks above catch each way a lock can disagree: shown on small made-up files.
GOOD_LOCK = """\
# header
mitmproxy==12.3.1 \\
    --hash=sha256:{a}
    # via -r requirements.txt
psycopg[binary]==3.3.9 ; implementation_name != 'pypy' \\
    --hash=sha256:{a} \\
    --hash=sha256:{b}
""".format(a="a" * 64, b="b" * 64)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mitmproxy>=12 \\\n    --hash=sha256:" + "a" * 64, "not pinned to one version"),
        ("mitmproxy==12.* --hash=sha256:" + "a" * 64, "not pinned to one version"),
        ("mitmproxy==12.3.1", "needs --hash=sha256:"),
        ("mitmproxy==12.3.1 --hash=md5:" + "a" * 32, "needs --hash=sha256:"),
        ("mitmproxy==12.3.1 --hash=sha256:abc", "needs --hash=sha256:"),
        ("mitmproxy", "not pinned to one version"),
        ("mitmproxy @ https://example.com/m.whl --hash=sha256:" + "a" * 64, "not pinned"),
        ("--index-url https://example.com/simple", "not a pin"),
        ("-e .", "not a pin"),
        (
            "six==1.17.0 --hash=sha256:" + "a" * 64 + "\nsix==1.16.0 --hash=sha256:" + "b" * 64,
            "pinned twice",
        ),
    ],
)
def test_a_line_that_is_not_a_hashed_pin_is_a_problem(text: str, problem: str) -> None:
    assert read_lock(GOOD_LOCK)[1] == []
    problems = read_lock(GOOD_LOCK + text + "\n")[1]
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize(
    ("requirement", "disagreement"),
    [
        ("mitmproxy>=12.3,<13", None),
        ("psycopg[binary]>=3.2,<4", None),
        ("mitmproxy>=13,<14", "outside its range"),
        ("psycopg[binary,pool]>=3.2,<4", "without the extras ['pool']"),
        ("redis[hiredis]>=6,<9", "is not pinned"),
        ("redis>=6; sys_platform == 'win32'", "is not pinned"),
        ("redis>=6; python_version < '3.12'", None),
        ("psycopg>=3.2", None),
        ("psycopg>=3.2; sys_platform == 'darwin'", None),
    ],
)
def test_a_requirement_the_pins_do_not_meet_is_a_disagreement(
    requirement: str, disagreement: str | None
) -> None:
    pins, _ = read_lock(GOOD_LOCK)
    found = disagreements([Requirement(requirement)], pins)
    assert found == [] if disagreement is None else len(found) == 1 and disagreement in found[0]


def test_a_pin_for_fewer_platforms_than_its_requirement_is_a_disagreement() -> None:
    pins, _ = read_lock("aioquic==1.2.0 ; sys_platform == 'linux' --hash=sha256:" + "a" * 64)
    found = disagreements([Requirement("aioquic>=1")], pins)
    assert len(found) == 1 and 'pinned only where sys_platform == "linux"' in found[0]
