"""Sampling from a trained character model: from its checkpoint alone, seeded, prompt first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlab.errors import ConfigError
from seqlab.generate import generate, load_language_model
from seqlab.tasks.language_model import LanguageModel
from seqlab.train import train
from tests.conftest import ROOT, TINY, compose_config

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 60


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last checkpoint of a few epochs of a tiny model on a repetitive text."""
    root = tmp_path_factory.mktemp("lm")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT)
    cfg = compose_config(
        "train",
        [
            *TINY,
            "data=text",
            f"data.path={corpus}",
            "data.batch_size=4",
            "data.bptt=32",
            "model.encoder.hidden_size=32",
            "model.encoder.num_layers=1",
            "model.optimizer.lr=0.01",
            "trainer.max_epochs=6",
            "test=false",
        ],
        root / "run",
    )
    train(cfg)
    return root / "run" / "checkpoints" / "last.ckpt"


def generate_cfg(tmp_path: Path, *overrides: str):
    return compose_config("generate", list(overrides), tmp_path / "generate")


def test_sample_starts_with_the_prompt_and_has_the_requested_length(checkpoint: Path) -> None:
    model = load_language_model(checkpoint)
    text = model.generate("ROMEO:", max_new_chars=80, temperature=0.8, seed=1)
    assert text.startswith("ROMEO:")
    assert len(text) == len("ROMEO:") + 80
    assert set(text) <= set(model.vocabulary.tokens[1:])  # never <unk>


def test_same_seed_same_text_other_seed_other_text(checkpoint: Path) -> None:
    model = load_language_model(checkpoint)
    state = torch.random.get_rng_state()
    first = model.generate("ROMEO:", 120, temperature=1.5, seed=7)
    assert model.generate("ROMEO:", 120, temperature=1.5, seed=7) == first
    assert model.generate("ROMEO:", 120, temperature=1.5, seed=8) != first
    # Sampling leaves the global random state alone.
    assert torch.equal(torch.random.get_rng_state(), state)


def test_trained_model_continues_the_text_it_learned(checkpoint: Path) -> None:
    model = load_language_model(checkpoint)
    greedy = model.generate("ROMEO:\nBut soft, ", 30, temperature=0)
    assert greedy.startswith("ROMEO:\nBut soft, what light")


def test_top_k_one_is_greedy(checkpoint: Path) -> None:
    model = load_language_model(checkpoint)
    greedy = model.generate("But ", 40, temperature=0)
    assert model.generate("But ", 40, temperature=3.0, top_k=1, seed=3) == greedy


def test_generate_restores_training_mode(checkpoint: Path) -> None:
    model = load_language_model(checkpoint).train()
    model.generate("R", 5, seed=0)
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"max_new_chars": -1}, "max_new_chars=-1"),
        ({"temperature": -0.5}, "temperature=-0.5"),
        ({"top_k": 0}, "top_k=0"),
    ],
)
def test_bad_sampling_options_fail_naming_them(checkpoint: Path, kwargs, message: str) -> None:
    model = load_language_model(checkpoint)
    with pytest.raises(ValueError, match=message):
        model.generate(**{"prompt": "R", "max_new_chars": 5, **kwargs})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("length=-1", "length=-1: must be an integer >= 0"),
        ("temperature=-1", "temperature=-1: must be a number >= 0"),
        ("top_k=0", "top_k=0: must be a positive integer, or null"),
        ("prompt=''", "prompt='': give at least one character"),
    ],
)
def test_bad_sampling_config_is_refused_naming_the_key(tmp_path: Path, override, message) -> None:
    # Checked before the checkpoint is read: this one does not even exist.
    cfg = generate_cfg(tmp_path, f"ckpt_path={tmp_path / 'none.ckpt'}", override)
    with pytest.raises(ConfigError, match=re.escape(message)):
        generate(cfg)


def test_generate_from_config_saves_the_sample(checkpoint: Path, tmp_path: Path) -> None:
    cfg = generate_cfg(tmp_path, f"ckpt_path={checkpoint}", "prompt=ROMEO:", "length=50")
    text = generate(cfg)
    assert (tmp_path / "generate" / "sample.txt").read_text() == text
    assert text.startswith("ROMEO:") and len(text) == 56


def test_generate_config_requires_a_checkpoint(tmp_path: Path) -> None:
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue):
        generate(generate_cfg(tmp_path))


def test_missing_or_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_language_model(tmp_path / "nope.ckpt")
    foreign = tmp_path / "classifier.ckpt"
    torch.save({"hyper_parameters": {"num_classes": 3, "encoder": {}}, "state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a language model's checkpoint"):
        load_language_model(foreign)


def test_checkpoint_alone_rebuilds_the_same_model(checkpoint: Path) -> None:
    model = load_language_model(checkpoint)
    again = LanguageModel.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    x = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(model(x)[0], again(x)[0])


def test_cli_prints_the_sample(checkpoint: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "generate.py"),
            f"ckpt_path={checkpoint}",
            "prompt=ROMEO:",
            "length=40",
            "seed=3",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "generate" / "runs").iterdir()
    sample = (run_dir / "sample.txt").read_text()
    assert sample in result.stdout and sample.startswith("ROMEO:")
    assert sample == load_language_model(checkpoint).generate("ROMEO:", 40, 0.8, seed=3)
