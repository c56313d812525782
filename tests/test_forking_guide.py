"""docs/forking.md works as written: its files, put where it says, train for a tiny epoch.

The guide marks every code block with an HTML comment on the line above it:
``<!-- file: PATH -->`` (a new file), ``<!-- patch: PATH -->`` (a diff of an existing file) or
``<!-- run -->`` (``python scripts/train.py ...`` command lines). The files are written into a
temporary fork; its Python packages are put in front of seqlab's own (``__path__``), its configs
on Hydra's search path, so the guide's code runs in-process exactly as pasted.
"""

from __future__ import annotations

import importlib
import math
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from seqlab.config_checks import check_config
from seqlab.train import train
from tests.conftest import TINY, compose_config

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "forking.md"
# A marker comment, then the fenced block right below it.
MARKED_BLOCK = re.compile(
    r"^<!-- (file|patch|run):? ?(\S*) -->\n```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL
)
FENCE = re.compile(r"^```(\w+)$", re.MULTILINE)
TRAIN = "python scripts/train.py"


@dataclass(frozen=True)
class Block:
    kind: str  # file | patch | run
    path: str  # where a file or patch goes, relative to the repository root; "" for run
    language: str
    text: str


def guide_blocks() -> list[Block]:
    text = GUIDE.read_text()
    return [Block(*match.groups()) for match in MARKED_BLOCK.finditer(text)]


def commands(blocks: list[Block]) -> list[list[str]]:
    """The Hydra overrides of every ``python scripts/train.py ...`` line of the run blocks."""
    found = []
    for block in blocks:
        for line in block.text.splitlines():
            if block.kind == "run" and line.startswith(TRAIN):
                found.append(shlex.split(line[len(TRAIN) :]))
    return found


def apply_patch(original: str, diff: str) -> str:
    """Apply a diff whose hunks start with ``@@`` and are found by their context lines (the
    line numbers are left out of the guide: it is read by people)."""
    lines = original.splitlines()
    hunks = re.split(r"^@@.*\n", diff, flags=re.MULTILINE)
    for hunk in filter(None, hunks):
        old = [line[1:] for line in hunk.splitlines() if line[:1] in (" ", "-")]
        new = [line[1:] for line in hunk.splitlines() if line[:1] in (" ", "+")]
        starts = [i for i in range(len(lines)) if lines[i : i + len(old)] == old]
        assert len(starts) == 1, f"hunk found {len(starts)} times (want once):\n{hunk}"
        lines[starts[0] : starts[0] + len(old)] = new
    return "\n".join(lines) + "\n"


def module_name(path: str) -> str:
    """``src/seqlab/data/x.py`` -> ``seqlab.data.x``; a package's ``__init__.py`` -> the package."""
    parts = Path(path).relative_to("src").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


BLOCKS = guide_blocks()
COMMANDS = commands(BLOCKS)


@pytest.fixture(scope="module")
def fork(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary fork holding the guide's files, importable and on Hydra's search path."""
    root = tmp_path_factory.mktemp("fork")
    for block in BLOCKS:
        if block.kind == "run":
            continue
        text = block.text
        if block.kind == "patch":  # onto an earlier patch of the same file, if any
            base = root / block.path if (root / block.path).exists() else ROOT / block.path
            text = apply_patch(base.read_text(), block.text)
        (root / block.path).parent.mkdir(parents=True, exist_ok=True)
        (root / block.path).write_text(text)
    new_modules = [
        module_name(b.path) for b in BLOCKS if b.kind == "file" and b.language == "python"
    ]
    with pytest.MonkeyPatch.context() as patch:
        for name in new_modules:
            patch.delitem(sys.modules, name, raising=False)
            package = importlib.import_module(name.rpartition(".")[0])
            folder = str(root / "src" / Path(*package.__name__.split(".")))
            patch.setattr(package, "__path__", [folder, *package.__path__])
        for block in BLOCKS:
            if block.kind == "patch" and block.path.endswith(".py"):
                load_patched(root / block.path, module_name(block.path), patch)
        yield root
        for name in new_modules:
            sys.modules.pop(name, None)


def load_patched(path: Path, name: str, patch: pytest.MonkeyPatch) -> None:
    """Run the patched module's code and add what it adds (names, dict entries such as a new
    ``TASKS`` key) to the module already imported, undone after the tests."""
    module = importlib.import_module(name)
    namespace = {"__name__": name, "__package__": name, "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    for key, value in namespace.items():
        if key.startswith("__"):  # __builtins__, __name__, ...
            continue
        current = getattr(module, key, None)
        if isinstance(value, dict) and isinstance(current, dict):
            for entry in value.keys() - current.keys():
                patch.setitem(current, entry, value[entry])
        elif not hasattr(module, key):
            patch.setattr(module, key, value, raising=False)


def test_every_code_block_of_the_guide_is_marked_and_so_tested() -> None:
    marked = [b.language for b in BLOCKS]
    code = [lang for lang in FENCE.findall(GUIDE.read_text()) if lang in ("python", "yaml", "diff")]
    assert sorted(code) == sorted(lang for lang in marked if lang != "bash")
    assert {b.kind for b in BLOCKS} == {"file", "patch", "run"}
    assert all(
        line.startswith(TRAIN)
        for b in BLOCKS
        if b.kind == "run"
        for line in b.text.splitlines()
        if line.strip()
    )


@pytest.mark.parametrize("overrides", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_guide_command_passes_the_config_check_and_trains(
    fork: Path, tmp_path: Path, overrides: list[str]
) -> None:
    search_path = f"hydra.searchpath=['file://{fork / 'configs'}']"
    cfg = compose_config("train", [*overrides, *TINY, search_path], tmp_path / "run")
    check_config(cfg)
    metrics = train(cfg)
    test_metrics = {key: value for key, value in metrics.items() if key.startswith("test/")}
    assert "test/loss" in test_metrics and len(test_metrics) >= 2
    assert all(math.isfinite(value) for value in test_metrics.values())


def test_guide_code_passes_the_project_lint(fork: Path) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    # The fork's files are seqlab's too, though they are not under this repository's src/.
    first_party = "lint.isort.known-first-party = ['seqlab']"
    config = ["--config", str(ROOT / "pyproject.toml"), "--config", first_party]
    for check in (["check"], ["format", "--check", "--diff"]):
        result = subprocess.run(
            [ruff, *check, *config, str(fork / "src")], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
