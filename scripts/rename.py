"""Rename the project's distribution: ``make rename NAME=myproj`` (``python scripts/rename.py myproj``).

A fork that keeps the name ``seqlab`` installs under another project's name, and its ``all``
extra (``seqlab[data,...]``) sends pip to the registry for that project on a fresh clone. This
rewrites the name wherever it stands for the distribution or the wandb project:

- ``pyproject.toml``: ``[project] name`` and the extras that name the project itself;
- ``configs/logger/*.yaml``: ``project: <old>`` (the wandb project);
- ``README.md``, ``docs/*.md`` and ``configs/**/*.yaml`` (their comments): install lines
  (``pip install <old>``, ``<old>[extras]``) and wandb commands (``--project <old>``,
  ``<entity>/<old>/``).

The import package ``seqlab`` (``src/seqlab``, ``import seqlab``, ``_target_: seqlab...``) stays:
only the distribution's name changes. The current name is read from ``pyproject.toml``, so a
second rename, to the same or another name, works too. All new texts are computed before any
file is written, so a refusal leaves every file as it was.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# PEP 508's distribution name (matched whole: fullmatch, so no trailing newline slips through).
VALID_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
ALLOWED = (
    "a distribution name (PEP 508): letters, digits, '.', '_' and '-', starting and ending "
    "with a letter or digit, e.g. make rename NAME=myproj"
)
TABLE = re.compile(r"^\s*\[+\s*([^\]\s]+)\s*\]+")
NAME_LINE = re.compile(r'^(\s*name\s*=\s*)(["\'])([^"\']*)\2')


class RenameError(Exception):
    """A refusal, printed as one ``error: ...`` line."""


def normalized(name: str) -> str:
    """PEP 503: ``My_Proj`` and ``my-proj`` are the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def current_name(pyproject: str) -> str:
    """The ``name`` of ``pyproject.toml``'s ``[project]`` table."""
    table = ""
    for line in pyproject.splitlines():
        if header := TABLE.match(line):
            table = header.group(1)
        elif table == "project" and (match := NAME_LINE.match(line)):
            return match.group(3)
    raise RenameError("pyproject.toml: no name in its [project] table")


def renamed_pyproject(text: str, old: str, new: str) -> str:
    """``[project] name``, and requirements in ``[project]`` tables naming the project itself
    (``"old[data,dev]"``), spelled as PEP 503 would match them."""
    self_reference = re.compile(r"([\"'])([A-Za-z0-9][A-Za-z0-9._-]*)(?=\s*[\[;<>=!~\"'])")

    def requirement(match: re.Match[str]) -> str:
        same = normalized(match.group(2)) == normalized(old)
        return match.group(1) + (new if same else match.group(2))

    lines: list[str] = []
    table = ""
    for line in text.splitlines(keepends=True):
        if header := TABLE.match(line):
            table = header.group(1)
        elif table == "project" and NAME_LINE.match(line):
            line = NAME_LINE.sub(lambda m: f"{m.group(1)}{m.group(2)}{new}{m.group(2)}", line)
        elif table == "project.optional-dependencies" or table == "project":
            code, hash_, comment = line.partition("#")
            line = self_reference.sub(requirement, code) + hash_ + comment
        lines.append(line)
    return "".join(lines)


def renamed_text(text: str, old: str, new: str, wandb_project: bool = False) -> str:
    """Install lines and wandb commands in docs and configs; ``project: old`` where
    ``wandb_project`` (a logger config)."""
    name = re.escape(old)
    end = r"(?![A-Za-z0-9._-]*[A-Za-z0-9])"  # the whole name, not a prefix of a longer one
    patterns = [
        rf"(?<![\w./-]){name}(?=\[[\w\s,.-]*\])",  # old[extras]
        rf"(?<=pip install )((?:-\S+ )*['\"]?){name}{end}",  # pip install [-U] old
        rf"(?<=--project[ =]){name}{end}",  # wandb sweep --project old
        rf"(?<=<entity>/){name}(?=/)",  # wandb agent <entity>/old/<sweep id>
    ]
    if wandb_project:
        patterns.append(rf"(?m)^(\s*project:\s*){name}(?=\s*(?:#.*)?$)")
    for pattern in patterns:
        text = re.sub(pattern, lambda m: (m.group(1) if m.groups() else "") + new, text)
    return text


def new_texts(root: Path, new: str) -> tuple[str, dict[Path, str]]:
    """The current name, and the new text of every file the rename changes."""
    if not VALID_NAME.fullmatch(new):
        raise RenameError(f"NAME={new!r}: must be {ALLOWED}")
    pyproject = root / "pyproject.toml"
    old = current_name(pyproject.read_text())
    texts = {pyproject: renamed_pyproject(pyproject.read_text(), old, new)}
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        texts[path] = renamed_text(path.read_text(), old, new)
    for path in sorted((root / "configs").rglob("*.yaml")):
        is_logger = path.parent == root / "configs" / "logger"
        texts[path] = renamed_text(path.read_text(), old, new, wandb_project=is_logger)
    return old, {path: text for path, text in texts.items() if text != path.read_text()}


def rename(root: Path, new: str) -> tuple[str, list[Path]]:
    """Rename the project in ``root`` to ``new``: the old name and the files changed. Each file
    is replaced whole (written beside it, then moved over it)."""
    old, texts = new_texts(root, new)
    for path, text in texts.items():
        partial = path.with_name(f".{path.name}.rename")
        partial.write_text(text)
        os.replace(partial, path)
    return old, list(texts)


def main(argv: list[str]) -> int:
    """``rename.py NAME``: 0 and the files changed, or 2 and one ``error:`` line."""
    new = " ".join(argv)
    try:
        old, changed = rename(ROOT, new)
    except RenameError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"renamed {old} -> {new}: {len(changed)} files changed")
    for path in changed:
        print(f"  {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
