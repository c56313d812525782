"""The language model's stateful truncated BPTT: the state is carried between consecutive chunks,
detached between them, reset at every epoch and stage start; bits per character; training from
a config; DDP ranks reading their own streams."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.optim.lr_scheduler import CosineAnnealingLR

from seqlab.data.text import UNK, TextDataModule, shard_streams
from seqlab.evaluate import evaluate
from seqlab.pipeline import build_datamodule, build_model
from seqlab.tasks import TASKS
from seqlab.tasks.language_model import BitsPerCharacter, LanguageModel
from seqlab.train import train
from tests.conftest import ROOT, TINY, compose_config

ENCODER = {"hidden_size": 12, "num_layers": 2, "dropout": 0.0}
OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 0.01}


def make_model(vocabulary: str = "abcd\n :", **kwargs: Any) -> LanguageModel:
    torch.manual_seed(0)
    options = {"encoder": ENCODER, "optimizer": OPTIMIZER, "embedding_size": 8, **kwargs}
    return LanguageModel([UNK, *vocabulary], **options)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small text with structure worth learning: repeated lines of a tiny play."""
    lines = ["ROMEO:", "But soft, what light through yonder window breaks?", "", "JULIET:"]
    lines += ["O Romeo, Romeo, wherefore art thou Romeo?", ""]
    path = tmp_path / "play.txt"
    path.write_text("\n".join(lines) * 40)
    return path


# --- registration and options --------------------------------------------------------------


def test_language_modeling_is_the_shakespeare_task() -> None:
    assert TASKS["language_modeling"] is LanguageModel
    assert LanguageModel.causal


def test_bidirectional_encoder_is_rejected_before_training(make_cfg, corpus: Path) -> None:
    cfg = make_cfg("data=text", f"data.path={corpus}", "model=bilstm")
    with pytest.raises(ValueError, match="bidirectional=true: this task predicts the next step"):
        build_model(cfg, build_datamodule(cfg))


def test_tied_weights_share_one_tensor_and_need_matching_sizes() -> None:
    model = make_model(embedding_size=12, tie_weights=True)
    assert model.head.net[-1].weight is model.embedding.weight
    with pytest.raises(ValueError, match=r"model\.embedding_size \(8\) equal .* \(12"):
        make_model(embedding_size=8, tie_weights=True)


# --- the carried state ---------------------------------------------------------------------


def test_carrying_the_state_over_two_chunks_equals_reading_them_as_one_sequence() -> None:
    model = make_model().eval()
    x = torch.randint(1, 8, (3, 20))
    whole, _ = model(x)
    first = model.forward_carried(x[:, :11], "train")
    second = model.forward_carried(x[:, 11:], "train")
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    # Without the carried state the second chunk would read differently.
    model.reset_state("train")
    cold = model.forward_carried(x[:, 11:], "train")
    assert not torch.allclose(cold, second, atol=1e-4)


def test_no_gradient_flows_into_the_previous_chunk() -> None:
    model = make_model()
    # Chunk 1 reads only "a" and "b", chunk 2 only "c" and "d".
    first, second = torch.tensor([[1, 2, 1, 2]]), torch.tensor([[3, 4, 3, 4]])
    model.forward_carried(first, "train")
    h, c = model.carried_state["train"]
    assert not h.requires_grad and not c.requires_grad
    logits = model.forward_carried(second, "train")
    logits.sum().backward()
    grad = model.embedding.weight.grad
    # The embeddings of "a" and "b" only reach the loss through chunk 1's state.
    assert torch.count_nonzero(grad[1:3]) == 0
    assert torch.count_nonzero(grad[3:5]) > 0


def test_stages_carry_separate_states() -> None:
    model = make_model().eval()
    x = torch.randint(1, 8, (2, 6))
    model.forward_carried(x, "train")
    train_state = model.carried_state["train"]
    val_logits = model.forward_carried(x, "val")
    torch.testing.assert_close(val_logits, model(x)[0])  # val started from the initial state
    assert model.carried_state["train"] is train_state


class RecordStates(Callback):
    """Notes, before each batch, whether its stage carries a state in, and train's state."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int, bool]] = []
        self.train_state_before: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}
        self.train_state_after: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}

    def _note(self, stage: str, module: LanguageModel, epoch: int, batch_idx: int) -> None:
        self.events.append((stage, epoch, batch_idx, stage in module.carried_state))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._note("train", pl_module, trainer.current_epoch, batch_idx)
        state = pl_module.carried_state.get("train")
        if state is not None:
            self.train_state_before[(trainer.current_epoch, batch_idx)] = state

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_state_after[(trainer.current_epoch, batch_idx)] = pl_module.carried_state[
            "train"
        ]

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self._note("val", pl_module, trainer.current_epoch, batch_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self._note("test", pl_module, trainer.current_epoch, batch_idx)


def test_state_resets_at_every_epoch_and_stage_start_and_survives_validation(
    corpus: Path, tmp_path: Path
) -> None:
    datamodule = TextDataModule(corpus, batch_size=2, bptt=16)
    datamodule.setup()
    model = LanguageModel(**datamodule.model_kwargs(), encoder=ENCODER, optimizer=OPTIMIZER)
    recorder = RecordStates()
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=5,
        val_check_interval=2,  # validation twice inside each epoch, between train batches
        limit_val_batches=3,
        num_sanity_val_steps=2,
        callbacks=[recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)

    stages = {stage for stage, *_ in recorder.events}
    assert stages == {"train", "val", "test"}
    for stage, epoch, batch_idx, carried in recorder.events:
        # Fresh at the first batch of every epoch and every stage run, carried after that.
        assert carried == (batch_idx > 0), (stage, epoch, batch_idx)
    # The validations in the middle of an epoch leave training's state as it was.
    for (epoch, batch_idx), before in recorder.train_state_before.items():
        after_previous = recorder.train_state_after[(epoch, batch_idx - 1)]
        assert all(a is b for a, b in zip(before, after_previous, strict=True))
    assert {key for key in recorder.train_state_before} == {
        (epoch, i) for epoch in range(2) for i in range(1, 5)
    }


# --- bits per character --------------------------------------------------------------------


def test_bpc_is_the_token_weighted_cross_entropy_in_bits() -> None:
    torch.manual_seed(0)
    metric = BitsPerCharacter()
    # Batches of different sizes, as a short last chunk makes.
    logits = [torch.randn(4, 10, 7), torch.randn(4, 3, 7)]
    targets = [torch.randint(0, 7, (4, 10)), torch.randint(0, 7, (4, 3))]
    for lg, y in zip(logits, targets, strict=True):
        metric.update(F.cross_entropy(lg.flatten(0, 1), y.flatten(), reduction="none"))
    all_logits = torch.cat([lg.flatten(0, 1) for lg in logits])
    all_targets = torch.cat([y.flatten() for y in targets])
    expected = F.cross_entropy(all_logits, all_targets) / math.log(2)
    torch.testing.assert_close(metric.compute(), expected)
    # Not the mean of the two batch means.
    batch_means = [
        F.cross_entropy(lg.flatten(0, 1), y.flatten())
        for lg, y in zip(logits, targets, strict=True)
    ]
    assert not torch.isclose(metric.compute(), sum(batch_means) / 2 / math.log(2))


def test_epoch_bpc_is_the_cross_entropy_of_every_test_character_in_bits(
    corpus: Path, tmp_path: Path
) -> None:
    # bptt=25 leaves a short last chunk: a mean of batch means would weigh it too much.
    datamodule = TextDataModule(corpus, batch_size=3, bptt=25)
    datamodule.setup()
    assert len(datamodule.ids["test"]) // 3 % 25 != 1
    model = make_model(vocabulary=datamodule.vocabulary.tokens[1:])
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.test(model, datamodule=datamodule, verbose=False)

    nll_sum, tokens = 0.0, 0
    model.reset_state()
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            logits = model.forward_carried(batch["x"], "check")
            nll_sum += F.cross_entropy(logits.flatten(0, 1), batch["y"].flatten(), reduction="sum")
            tokens += batch["y"].numel()
    expected = float(nll_sum) / tokens / math.log(2)
    assert float(trainer.callback_metrics["test/bpc"]) == pytest.approx(expected, rel=1e-5)
    assert float(trainer.callback_metrics["test/loss"]) == pytest.approx(
        expected * math.log(2), rel=1e-5
    )


# --- training from the config --------------------------------------------------------------


@pytest.mark.quick
def test_fast_dev_run_on_a_text_file_trains_and_tests(make_cfg, corpus: Path) -> None:
    cfg = make_cfg(
        "data=text", f"data.path={corpus}", "data.batch_size=4", "data.bptt=16", "debug=fdr"
    )
    metrics = train(cfg)
    assert {"test/loss", "test/bpc"} <= set(metrics)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["test/bpc"] == pytest.approx(metrics["test/bpc"])


def test_eval_of_the_best_checkpoint_reproduces_the_test_bpc(
    make_cfg, corpus: Path, tmp_path: Path
) -> None:
    overrides = ["data=text", f"data.path={corpus}", "data.batch_size=4", "data.bptt=16"]
    cfg = make_cfg(*overrides, "trainer.max_epochs=2")
    metrics = train(cfg)
    (best,) = (Path(cfg.paths.output_dir) / "checkpoints").glob("epoch_*.ckpt")
    again = evaluate(compose_config("eval", [*overrides, f"ckpt_path={best}"], tmp_path / "eval"))
    assert again["test/bpc"] == pytest.approx(metrics["test/bpc"], abs=1e-6)


def test_a_short_run_learns_the_text(make_cfg, corpus: Path) -> None:
    cfg = make_cfg(
        "data=text",
        f"data.path={corpus}",
        "data.batch_size=4",
        "data.bptt=32",
        "model.encoder.hidden_size=32",
        "model.encoder.num_layers=1",
        "model.head.dropout=0.0",
        "model.optimizer.lr=0.01",
        "model.scheduler=null",
        "trainer.max_epochs=8",
    )
    metrics = train(cfg)
    # Uniform guessing over the ~30 characters costs log2(30) ~ 4.9 bits.
    assert metrics["test/bpc"] < 2.5


def test_shakespeare_experiment_builds_a_causal_model_with_its_own_lr_schedule(make_cfg) -> None:
    cfg = make_cfg("experiment=shakespeare", tiny=False)
    model = build_model(cfg, build_datamodule(cfg))
    assert isinstance(model, LanguageModel)
    assert not cfg.model.encoder.bidirectional
    # The experiment's cosine schedule replaced model/lstm.yaml's plateau schedule whole,
    # with none of its keys (mode, factor, patience) merged in.
    assert model.hparams["scheduler"] == {
        "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
        "T_max": cfg.trainer.max_epochs,
    }
    optimizers = model.configure_optimizers()
    assert isinstance(optimizers["lr_scheduler"]["scheduler"], CosineAnnealingLR)


@pytest.mark.slow
def test_shakespeare_experiment_reaches_its_target(make_cfg) -> None:
    """The pinned result: <= 2.1 bits per character on the held-out plays (~8 CPU-minutes)."""
    cfg = make_cfg(
        "experiment=shakespeare",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null",
        tiny=False,
    )
    metrics = train(cfg)
    assert metrics["test/bpc"] <= 2.1


# --- DDP -------------------------------------------------------------------------------------


class RecordFirstBatch(Callback):
    """Writes each rank's first training batch to ``<out_dir>/rank<r>.pt``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0 and trainer.current_epoch == 0:
            torch.save(batch["x"].cpu(), self.out_dir / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_ranks_train_on_their_own_contiguous_streams(corpus: Path, tmp_path: Path) -> None:
    """Two CPU processes (gloo): each rank's first batch is the start of its own streams, so
    Lightning's distributed sampler did not deal the chunks out."""
    out_dir = tmp_path / "batches"
    out_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            *TINY,
            "data=text",
            f"data.path={corpus}",
            "data.batch_size=2",
            "data.bptt=16",
            "trainer.devices=2",
            "+trainer.strategy=ddp",
            "+trainer.limit_train_batches=3",
            "test=false",
            "logger=none",
            f"+callbacks.record._target_={__name__}.RecordFirstBatch",
            f"+callbacks.record.out_dir={out_dir}",
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "SEQLAB_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    datamodule = TextDataModule(corpus, batch_size=2, bptt=16)
    datamodule.setup()
    for rank in range(2):
        seen = torch.load(out_dir / f"rank{rank}.pt")
        expected = shard_streams(datamodule.ids["train"], 2, rank, world_size=2)[:, :16]
        assert torch.equal(seen, expected.long()), rank
