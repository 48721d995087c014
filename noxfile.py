"""Developer sessions: `nox -s tests` (default, CI), `nox -s lint`, `nox -s bench`, `nox -s soak`.

Every session installs what it needs into its own virtualenv; system packages (mbpoll for the
independent-Modbus-master test, mosquitto for the gateway, postgresql for the fleet; later
victoria-metrics, chromium)
come from
scripts/system-deps.sh, which `./dev.sh` runs first.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
# Test parts in dependency order; a failure names the part that broke.
PARTS = [
    "architecture", "contracts", "hardware", "firmware", "sim", "bus", "gateway", "provisioning",
    "fleet", "web", "system", "demo",
]


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Every part's tests against real peers (MicroPython unix port, ptys, mbpoll)."""
    _install(session, "test")
    parts = session.posargs or PARTS
    failed = []
    for part in parts:
        session.log(f"=== tests: {part} ===")
        try:
            session.run("pytest", f"tests/{part}", "-p", "no:cacheprovider")
        except nox.command.CommandFailed:
            failed.append(part)
    if failed:
        session.error(f"tests failed in: {', '.join(failed)}")


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Long fuzz and soak runs (marked slow; not part of the default test run)."""
    _install(session, "test")
    session.run("pytest", "tests", "-m", "slow", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff and mypy on the CPython parts; generated files fresh."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("mypy", "edgefleet", "contracts", "hardware", "gateway", "fleet", "provisioning")
    session.run("edgefleet", "hw", "check")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Every benchmark; writes bench/results.json and prints a table."""
    _install(session, "test")
    session.run("python", "-m", "bench", *session.posargs)
