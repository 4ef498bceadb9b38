"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typing``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typing", "docs"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=["3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    """Run the test suite (the README's test command) on every Python found."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff, as CI runs it."""
    session.install("ruff")
    session.run("ruff", "check", "arkworker", "tests", "examples")
    session.run("ruff", "format", "--check", "arkworker")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".", "mypy")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation strictly: a warning fails the build."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", session.create_tmp(), env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark, quick: arkworker beside the raw floor and the peers that install."""
    session.install("-e", ".", "-r", "bench/requirements.txt")
    session.run("python", "bench/run.py", "--quick", *session.posargs)
