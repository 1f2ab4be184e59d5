"""Print ``name==version`` for poolbench's dependencies (with the ``dev`` extra) and all of
theirs, as installed in the Python that runs this: the body of requirements.lock.

    <venv>/bin/python scripts/lock_closure.py pyproject.toml

Only what poolbench needs, however deep (a package that happens to sit in the virtualenv but
that nothing requires is left out); each requirement's environment markers and extras are
evaluated as pip would in this interpreter. Used by scripts/lock-refresh.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

try:
    import tomllib
except ImportError:  # Python 3.10: pip carries a copy
    from pip._vendor import tomli as tomllib
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

EXTRAS = ("dev",)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(pyproject: str) -> list[Requirement]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    lines = list(project.get("dependencies", []))
    for extra in EXTRAS:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(line) for line in lines]


def _applies(req: Requirement, extras: frozenset) -> bool:
    return req.marker is None or any(req.marker.evaluate({"extra": e})
                                     for e in {"", *extras})


def closure(roots: list[Requirement]) -> dict[str, metadata.Distribution]:
    """{canonical name: installed distribution} for ``roots`` and everything they need."""
    found: dict[str, metadata.Distribution] = {}
    extras_seen: dict[str, frozenset] = {}
    todo = [(r, frozenset()) for r in roots]
    while todo:
        req, parent_extras = todo.pop()
        if not _applies(req, parent_extras):
            continue
        name, extras = canonical(req.name), frozenset(req.extras)
        if name in found and extras <= extras_seen[name]:
            continue
        try:
            dist = found.get(name) or metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"lock_closure: {req.name} is required ({req}) but not installed in "
                     f"{sys.prefix}")
        found[name] = dist
        extras_seen[name] = extras_seen.get(name, frozenset()) | extras
        todo += [(Requirement(line), extras_seen[name]) for line in dist.requires or []]
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    deps = closure(project_requirements(argv[0]))
    for name in sorted(deps):
        print(f"{deps[name].metadata['Name']}=={deps[name].version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
