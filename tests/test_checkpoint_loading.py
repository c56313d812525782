"""eval / predict / export / generate read checkpoints weights-only, and say clearly what is
wrong with a file that is not a seqlab checkpoint, or not one for this data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlab.errors import DataError
from seqlab.evaluate import evaluate
from seqlab.train import train
from seqlab.trained import read_checkpoint
from tests.conftest import compose_config


class Opaque:
    """Any class: unpickling it could run code, so weights-only loading refuses it."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    from tests.conftest import TINY

    train(compose_config("train", TINY, run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def test_a_seqlab_checkpoint_loads_weights_only(checkpoint) -> None:
    loaded = read_checkpoint(checkpoint)
    assert "encoder" in loaded["hyper_parameters"]
    torch.load(checkpoint, weights_only=True)  # nothing in it needs unpickling code


def test_a_text_file_is_not_a_checkpoint(tmp_path) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint")
    with pytest.raises(DataError, match=r"notes\.ckpt: not a PyTorch checkpoint"):
        read_checkpoint(path)


def test_a_file_with_pickled_objects_is_refused_unopened(tmp_path) -> None:
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "thing": Opaque()}, path)
    with pytest.raises(
        DataError,
        match=r"holds Python objects besides tensors and plain containers \(tests\.test_checkpoint_loading\.Opaque\)",
    ):
        read_checkpoint(path)


def test_a_plain_state_dict_is_not_a_seqlab_checkpoint(tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(DataError, match="a PyTorch file but not a seqlab checkpoint"):
        read_checkpoint(path)


def test_a_checkpoint_for_other_data_is_named(checkpoint, tmp_path) -> None:
    cfg = compose_config(
        "eval", [f"ckpt_path={checkpoint}", "data=ucr", "data.name=ItalyPowerDemand"], tmp_path
    )
    with pytest.raises(DataError, match="trained with input_size=12, but data=UCRDataModule has"):
        evaluate(cfg)
    cfg = compose_config("eval", [f"ckpt_path={checkpoint}", "data=adding"], tmp_path / "b")
    with pytest.raises(DataError, match=r"not of a SequenceRegressor.*pass the data= it was"):
        evaluate(cfg)
