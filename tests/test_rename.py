"""``make rename NAME=...`` (scripts/rename.py): a fork's distribution, its ``all`` extra, its wandb
project and its install lines take the new name; the import package ``seqlab`` stays.

The fast tests rename a copy of this working tree; the slow one renames a fresh
clone (committed files only), installs it into a new environment and trains in it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import ROOT, TINY

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's copy of the same parser
    from pip._vendor import tomli as tomllib

SCRIPT = Path("scripts") / "rename.py"
ERROR = re.compile(r"^error: NAME='.*': must be a distribution name \(PEP 508\): letters, digits")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rename", ROOT / SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rename_script = load_script()


@pytest.fixture
def fork(tmp_path: Path) -> Path:
    """The working tree's files that git does not ignore (as edited now, committed or not)."""
    root = tmp_path / "fork"
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)
    return root


def run_rename(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / SCRIPT), *args], capture_output=True, text=True, check=False
    )


def digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def requirement_names(pyproject: dict) -> dict[str, list[str]]:
    """extra -> the distribution names its requirements start with."""
    return {
        extra: [re.split(r"[\s\[;<>=!~]", req.strip(), maxsplit=1)[0] for req in reqs]
        for extra, reqs in pyproject["project"]["optional-dependencies"].items()
    }


def install_texts(root: Path) -> str:
    paths = [root / "README.md", *(root / "docs").glob("*.md"), *(root / "configs").rglob("*.yaml")]
    return "\n".join(path.read_text() for path in paths)


def naming(name: str, text: str) -> list[str]:
    """Where ``text`` names the distribution or wandb project ``name``."""
    pattern = rf"{name}\[|pip install \S*{name}\b|--project {name}\b|^\s*project: {name}$"
    return re.findall(pattern, text, flags=re.MULTILINE)


def test_rename_changes_the_distribution_and_wandb_project_and_reports_each_file(fork) -> None:
    before = digests(fork)
    old = tomllib.loads((fork / "pyproject.toml").read_text())
    result = run_rename(fork, "myproj")
    assert result.returncode == 0, result.stderr

    pyproject = tomllib.loads((fork / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "myproj"
    names = requirement_names(pyproject)
    assert "seqlab" not in [name for extra in names.values() for name in extra]
    assert names["all"] == ["myproj"]
    # The same extras under the new name, and nothing else in pyproject.toml changed.
    extras = old["project"]["optional-dependencies"]
    extras["all"] = [req.replace("seqlab[", "myproj[", 1) for req in extras["all"]]
    old["project"]["name"] = "myproj"
    assert pyproject == old

    wandb = yaml.safe_load((fork / "configs" / "logger" / "wandb.yaml").read_text())
    assert wandb["wandb"]["project"] == "myproj"
    texts = install_texts(fork)
    assert "pip install 'myproj[slurm]'" in (fork / "docs" / "clusters.md").read_text()
    assert naming("seqlab", texts) == []
    # The import package is untouched.
    assert "_target_: seqlab.data.synthetic.SineDataModule" in texts
    assert "`src/seqlab/data/<name>.py`" in (fork / "docs" / "forking.md").read_text()
    assert (fork / "src" / "seqlab" / "__init__.py").is_file()

    # What it says it changed is exactly what changed.
    after = digests(fork)
    changed = {name for name in before if before[name] != after[name]}
    listed = {line.strip() for line in result.stdout.splitlines()[1:]}
    assert listed == changed
    assert {"pyproject.toml", "configs/logger/wandb.yaml", "docs/clusters.md"} <= changed
    assert result.stdout.startswith(f"renamed seqlab -> myproj: {len(changed)} files changed")


def test_rename_twice_and_to_another_name_reads_the_current_name(fork) -> None:
    original = digests(fork)
    assert run_rename(fork, "myproj").returncode == 0
    renamed = digests(fork)
    again = run_rename(fork, "myproj")
    assert again.returncode == 0 and "0 files changed" in again.stdout
    assert digests(fork) == renamed

    assert run_rename(fork, "My_Other.proj").returncode == 0
    pyproject = tomllib.loads((fork / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "My_Other.proj"
    assert requirement_names(pyproject)["all"] == ["My_Other.proj"]
    assert "pip install 'My_Other.proj[slurm]'" in (fork / "docs" / "clusters.md").read_text()
    assert naming("myproj", install_texts(fork) + (fork / "pyproject.toml").read_text()) == []

    assert run_rename(fork, "seqlab").returncode == 0
    assert digests(fork) == original


@pytest.mark.parametrize(
    "name", ["", "my proj", "-myproj", "myproj.", "naïve", "a/b", "x[all]", "myproj\n"]
)
def test_bad_name_exits_2_with_one_error_line_and_changes_nothing(fork, name: str) -> None:
    before = digests(fork)
    result = run_rename(fork, name)
    assert result.returncode == 2
    assert result.stdout == ""
    assert ERROR.match(result.stderr) and result.stderr.count("\n") == 1
    assert f"NAME={name!r}" in result.stderr
    assert digests(fork) == before


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_rename_takes_name_from_the_command_line_only(fork) -> None:
    """Some shells (WSL) export NAME as the machine's name: ``make rename`` must not use it."""
    before = digests(fork)
    make = ["make", "--no-print-directory", "rename", f"PYTHON={sys.executable}"]
    env = {**os.environ, "NAME": "my-laptop"}
    result = subprocess.run(make, cwd=fork, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "error: NAME='': must be a distribution name" in result.stderr
    assert digests(fork) == before

    result = subprocess.run(
        [*make, "NAME=myproj"], cwd=fork, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert tomllib.loads((fork / "pyproject.toml").read_text())["project"]["name"] == "myproj"


def test_install_lines_are_renamed_and_import_paths_are_not() -> None:
    text = (
        "pip install seqlab\n"
        "pip install -U 'seqlab[data]'\n"
        'needs the seqlab[export,dev] extra; pip install "seqlab"\n'
        "wandb sweep --project seqlab x.yaml; wandb agent <entity>/seqlab/<sweep id>\n"
        "import seqlab; from seqlab.data import x; src/seqlab/nn; seqlab's LSTM\n"
        "_target_: seqlab.nn.LSTMEncoder\n"
        "pip install seqlab-extras; pip install seqlabx; other-seqlab[data]\n"
        "  project: seqlab\n"
    )
    assert rename_script.renamed_text(text, "seqlab", "myproj") == (
        "pip install myproj\n"
        "pip install -U 'myproj[data]'\n"
        'needs the myproj[export,dev] extra; pip install "myproj"\n'
        "wandb sweep --project myproj x.yaml; wandb agent <entity>/myproj/<sweep id>\n"
        "import seqlab; from seqlab.data import x; src/seqlab/nn; seqlab's LSTM\n"
        "_target_: seqlab.nn.LSTMEncoder\n"
        "pip install seqlab-extras; pip install seqlabx; other-seqlab[data]\n"
        "  project: seqlab\n"  # a project key outside configs/logger/ is left alone
    )
    logger = rename_script.renamed_text("wandb:\n  project: seqlab\n", "seqlab", "myproj", True)
    assert logger == "wandb:\n  project: myproj\n"


@pytest.mark.slow
def test_a_renamed_fresh_clone_installs_under_its_name_and_trains(tmp_path) -> None:
    """Clone, ``make rename``, install into a new environment, train one tiny epoch.

    The new environment reaches this one's packages through a .pth file (torch is not
    installed twice), and so it sees the ``seqlab`` distribution installed here too: pip would
    take that for the ``all`` extra's ``seqlab[...]``. So the installed ``myproj``'s own
    metadata is read: its requirements must name ``myproj`` and never ``seqlab``.
    """
    clone, venv = tmp_path / "myproj", tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "PYTHON"))}
    env |= {"NETRC": str(tmp_path / "no-netrc"), "WANDB_CONFIG_DIR": str(tmp_path / ".wandb")}

    def run(*command: str | Path, cwd: Path = clone) -> str:
        result = subprocess.run(
            [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result.stdout

    run("git", "clone", "--quiet", ROOT, clone, cwd=tmp_path)
    run("make", "--no-print-directory", "rename", "NAME=myproj", f"PYTHON={sys.executable}")
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    (site / "base_environment.pth").write_text(sysconfig.get_path("purelib") + "\n")

    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", clone)
    probe = (
        "import importlib.metadata as m, json, seqlab; d = m.distribution('myproj'); "
        "print(json.dumps([str(d.locate_file('')), d.requires, seqlab.__file__]))"
    )
    location, requires, package = json.loads(run(python, "-c", probe))
    assert Path(location) == site  # installed here, not found in the base environment
    assert Path(package).is_relative_to(clone / "src")  # the clone's code, under its old name
    extra_all = [req for req in requires if 'extra == "all"' in req]
    assert extra_all and all(req.startswith("myproj[") for req in extra_all), extra_all
    assert not [req for req in requires if re.match(r"seqlab\b", req)], requires

    sizes = ["data.train_size=64", "data.val_size=32", "data.test_size=32"]
    sine = ["data.seq_len=30", "data.min_len=10", "data.rollout_horizon=4"]
    run(python, "scripts/train.py", "data=sine", *TINY, *sizes, *sine)
    (metrics,) = clone.glob("logs/train/runs/*/metrics.json")
    assert "test/loss" in json.loads(metrics.read_text())

    # Last, what pip makes of `[all]` without the registry: it must never look the project up.
    # What it lacks can only be a package this environment does not have (installed without
    # `.[all]`, say), and then this part is skipped, saying which.
    dry_run = ["install", "--dry-run", "--no-index", "--no-build-isolation", "-e", f"{clone}[all]"]
    result = subprocess.run([*pip, *dry_run], env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        missing = re.search(r"satisfies the requirement ([A-Za-z0-9._-]+)", result.stderr)
        assert missing, result.stderr[-3000:]
        assert missing.group(1).lower() not in ("seqlab", "myproj"), result.stderr[-3000:]
        pytest.skip(f"this environment lacks {missing.group(1)} of the all extra")
