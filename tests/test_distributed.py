"""DDP on CPU (gloo): exact loss weighting across processes, evaluation that counts every
sample once, one run folder and one wandb run per CLI run."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from seqlab.data.collate import pad_collate
from seqlab.data.ucr import UCRDataModule
from seqlab.tasks.tagging import SequenceTagger
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without torch.distributed"
)


def variable_length_batch() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """8 sequences whose lengths differ a lot between the two halves (32 vs 12 real steps),
    so a per-process mean would weigh the halves' steps very differently."""
    g = torch.Generator().manual_seed(0)
    lengths = [9, 8, 7, 8, 3, 2, 4, 3]
    return [
        (torch.randn(n, 3, generator=g), torch.randint(0, 4, (n,), generator=g)) for n in lengths
    ]


class HalfPerProcess(L.LightningDataModule):
    """The whole batch on one process; on two, each process takes its own half."""

    def train_dataloader(self) -> DataLoader:
        samples = variable_length_batch()
        world, rank = self.trainer.world_size, self.trainer.global_rank
        share = len(samples) // world
        mine = samples[rank * share : (rank + 1) * share]
        collate = lambda s: pad_collate(s, pad_targets=True)  # noqa: E731
        return DataLoader(mine, batch_size=len(mine), collate_fn=collate)


def one_sgd_step(model: SequenceTagger, devices: int) -> dict[str, torch.Tensor]:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=HalfPerProcess())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_ddp_step_on_halves_equals_one_step_on_the_whole_batch() -> None:
    torch.manual_seed(0)
    model = SequenceTagger(
        input_size=3,
        num_classes=4,
        encoder={"hidden_size": 8, "num_layers": 1, "dropout": 0.0},
        optimizer={"_target_": "torch.optim.SGD", "lr": 1.0},
        head={"dropout": 0.0},
    )
    start = {k: v.clone() for k, v in model.state_dict().items()}
    single = one_sgd_step(copy.deepcopy(model), devices=1)
    double = one_sgd_step(copy.deepcopy(model), devices=2)
    moved = max((single[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3  # the step did something
    for key in single:
        torch.testing.assert_close(double[key], single[key], atol=1e-6, rtol=0, msg=key)


class FakeTrainer:
    def __init__(self, world_size: int, global_rank: int) -> None:
        self.world_size, self.global_rank = world_size, global_rank


@pytest.mark.parametrize("batch_size", [32, 7])
def test_distributed_evaluation_sees_every_test_sample_exactly_once(batch_size: int) -> None:
    datamodule = UCRDataModule(name="ItalyPowerDemand", batch_size=batch_size)
    datamodule.setup()
    n_test = len(datamodule.datasets["test"])
    assert n_test % 2 == 1  # 1029: the shards cannot be equal
    seen = []
    for rank in (0, 1):
        datamodule.trainer = FakeTrainer(2, rank)  # type: ignore[assignment]
        for batch in datamodule.test_dataloader():
            seen.extend(batch["x"][:, :, 0].sum(1).tolist())
    datamodule.trainer = None
    alone = [s for b in datamodule.test_dataloader() for s in b["x"][:, :, 0].sum(1).tolist()]
    assert len(seen) == n_test
    assert sorted(seen) == pytest.approx(sorted(alone))


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"NETRC": str(cwd / "no-netrc"), "WANDB_CONFIG_DIR": str(cwd / ".wandb-config")}
    quiet = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]
    quiet = quiet if script == "train.py" else []
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args, *quiet],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ddp_cpu_run_has_one_folder_one_wandb_run_and_its_eval_matches_one_process(
    tmp_path: Path,
) -> None:
    train = run_script(
        "train.py",
        "trainer=ddp_cpu",
        "trainer.max_epochs=4",
        "model.encoder.hidden_size=32",
        "model.optimizer.lr=0.01",
        "logger=wandb",
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.5  # chance is about 0.11

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    results = {}
    for trainer in ("default", "ddp_cpu"):
        out = run_script(
            "eval.py",
            f"ckpt_path={ckpt}",
            f"trainer={trainer}",
            "data.batch_size=48",
            f"hydra.run.dir={tmp_path / 'eval' / trainer}",
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        results[trainer] = json.loads((tmp_path / "eval" / trainer / "metrics.json").read_text())
    assert results["ddp_cpu"] == pytest.approx(results["default"], abs=1e-6, rel=0)


def test_multirun_with_lightnings_ddp_launcher_stops_with_advice(tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        "-m",
        "trainer=ddp_cpu",
        "seed=1",
        "trainer.max_epochs=1",
        "logger=csv",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "trainer.strategy=ddp_spawn" in result.stdout + result.stderr


@pytest.mark.slow
def test_multirun_with_ddp_spawn_gives_one_folder_per_job(tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        "-m",
        "trainer=ddp_cpu",
        "trainer.strategy=ddp_spawn",
        "seed=1,2",
        "trainer.max_epochs=1",
        "model.encoder.hidden_size=16",
        "logger=tensorboard",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    for job in ("0", "1"):
        assert "test/acc" in json.loads((sweep / job / "metrics.json").read_text())
