"""Every relative link in README.md and docs/*.md points to a file that exists (and, where
it names a heading of a Markdown file, to a heading that exists). Links inside code blocks
and code spans are not links; web links are not followed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Files that README links to and that another branch writes; a missing one is tolerated
# until that branch is merged. Empty this set once they exist.
PENDING: set[str] = set()

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).+?\1")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link or image outside code."""
    found, in_fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            found += [(number, m.group(1)) for m in LINK.finditer(CODE_SPAN.sub("", line))]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, code marks and punctuation other than
    '-' and '_' dropped, spaces to '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings, in_fence = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            headings.append(slug(m.group(1)))
    seen: dict[str, int] = {}
    result = set()
    for h in headings:  # repeated headings get -1, -2, ... as on GitHub
        result.add(h if h not in seen else f"{h}-{seen[h]}")
        seen[h] = seen.get(h, 0) + 1
    return result


def broken_links(files: list[Path], root: Path = ROOT, pending=frozenset()) -> list[str]:
    """'file:line: target (why)' for each relative link that does not resolve."""
    problems = []
    for md in files:
        for number, target in links(md.read_text()):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            dest = (md.parent / path_part).resolve() if path_part else md
            where = f"{md.relative_to(root)}:{number}: {target}"
            try:
                rel = dest.relative_to(root).as_posix()
            except ValueError:
                problems.append(f"{where} (outside the repository)")
                continue
            if not dest.exists():
                if rel not in pending:
                    problems.append(f"{where} (no file {rel})")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where} (no heading #{anchor} in {rel})")
    return problems


def test_readme_and_docs_links_resolve():
    problems = broken_links(doc_files(), pending=PENDING)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_broken_links_are_found(tmp_path):
    """The checker reports a missing file, a missing heading and a link leaving the tree,
    and ignores links in code and web links."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A title\n\n## `code` and more\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md) [ok](docs/a.md#code-and-more) [ok](#intro) [web](https://x.org/y)\n"
        "# Intro\n"
        "[gone](docs/b.md)\n"
        "[bad anchor](docs/a.md#nowhere)\n"
        "[out](../elsewhere.md)\n"
        "`[code](docs/c.md)`\n"
        "```\n[fenced](docs/d.md)\n```\n"
        "![img](docs/missing.png)\n")
    problems = broken_links(doc_files(tmp_path), root=tmp_path)
    assert [p.split(" (")[0] for p in problems] == [
        "README.md:3: docs/b.md",
        "README.md:4: docs/a.md#nowhere",
        "README.md:5: ../elsewhere.md",
        "README.md:10: docs/missing.png",
    ]
    assert broken_links(doc_files(tmp_path), root=tmp_path, pending={"docs/b.md"}) == problems[1:]


def test_every_benchmark_table_is_indexed_and_names_its_command():
    """Each docs/bench_*.md names the `poolbench-bench ...` command that made it near its
    top, and docs/benchmarks.md links to it."""
    index = {target for _, target in links((ROOT / "docs" / "benchmarks.md").read_text())}
    tables = sorted((ROOT / "docs").glob("bench_*.md"))
    assert tables
    for table in tables:
        head = "\n".join(table.read_text().splitlines()[:12])
        assert re.search(r"`[^`]*poolbench-bench [a-z-]+[^`]*`", head), \
            f"{table.name} does not name its poolbench-bench command in its first lines"
        assert table.name in index, f"docs/benchmarks.md does not link {table.name}"
