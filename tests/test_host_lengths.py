"""Lengths stay on the host from the collate to the LSTM: the tasks' transfer hook, the tasks on
a device that nothing can be read back from, and Lightning's choice of the hook.

The data-less meta device stands in for an accelerator (see tests/test_encoder.py): a value read
back from it raises, and so does a CPU tensor mixed into its arithmetic.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from seqlab.data.collate import add_input_noise, pad_collate, shift_channels, time_warp
from seqlab.data.synthetic import SineDataModule
from seqlab.tasks.base import SequenceTask
from seqlab.tasks.classification import SequenceClassifier
from seqlab.tasks.forecasting import SequenceForecaster
from seqlab.tasks.regression import SequenceRegressor
from seqlab.tasks.tagging import SequenceTagger

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")

META = torch.device("meta")
ENCODER = {"hidden_size": 8, "num_layers": 2, "dropout": 0.1}
LSTM_FCN = {**ENCODER, "conv_channels": [4], "conv_kernel_size": 3, "conv_mode": "parallel"}
OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}
LENGTHS = [5, 2, 4]


def padded_batch(per_step: bool = False) -> dict[str, torch.Tensor]:
    """Three sequences of 3 channels, a class each (or per step), padded as the data modules do."""
    generator = torch.Generator().manual_seed(0)
    samples = [
        (
            torch.randn(n, 3, generator=generator),
            torch.randint(0, 3, (n,) if per_step else (), generator=generator),
        )
        for n in LENGTHS
    ]
    return pad_collate(samples, pad_targets=per_step)


def build(task: str, encoder: dict) -> SequenceTask:
    torch.manual_seed(0)
    if task == "classifier":
        return SequenceClassifier(3, 3, encoder=encoder, optimizer=OPTIMIZER)
    if task == "regressor":
        return SequenceRegressor(3, 1, encoder=encoder, optimizer=OPTIMIZER)
    return SequenceTagger(3, 3, encoder=encoder, optimizer=OPTIMIZER)


def test_the_transfer_moves_everything_but_the_lengths() -> None:
    model = build("classifier", ENCODER)
    batch = {**padded_batch(), "mask": torch.ones(3, 5, dtype=torch.bool)}
    moved = model.transfer_batch_to_device(batch, META, 0)
    assert list(moved) == list(batch)
    assert moved["lengths"] is batch["lengths"]
    assert {moved[key].device.type for key in ("x", "y", "mask")} == {"meta"}
    # A language model's batch has no lengths: it moves whole.
    ids = {"x": torch.zeros(2, 4, dtype=torch.long), "y": torch.zeros(2, 4, dtype=torch.long)}
    assert {v.device.type for v in model.transfer_batch_to_device(ids, META, 0).values()} == {
        "meta"
    }


@pytest.mark.parametrize("encoder", [ENCODER, LSTM_FCN], ids=["lstm", "lstm-fcn"])
@pytest.mark.parametrize("task", ["classifier", "regressor", "tagger"])
def test_a_task_reads_nothing_back_from_the_device(task: str, encoder: dict) -> None:
    model = build(task, encoder).to(META).train()
    batch = model.transfer_batch_to_device(padded_batch(per_step=task == "tagger"), META, 0)
    output = model(batch["x"], batch["lengths"])
    output.float().pow(2).mean().backward()
    assert output.device.type == "meta"
    encoded = model.encoder(batch["x"], batch["lengths"])
    assert model.real_steps(encoded, batch["lengths"]) is encoded.mask


def test_forecasting_scores_and_rolls_out_on_the_device() -> None:
    torch.manual_seed(0)
    model = SequenceForecaster(3, encoder=ENCODER, optimizer=OPTIMIZER, rollout_horizon=2)
    model = model.to(META)
    generator = torch.Generator().manual_seed(0)
    series = [torch.randn(n + 1, 3, generator=generator) for n in LENGTHS]
    batch = pad_collate([(s[:-1], s[1:]) for s in series], pad_targets=True)
    batch["mask"] = torch.ones(3, 5, dtype=torch.bool)
    batch = model.transfer_batch_to_device(batch, META, 0)
    encoded = model.encoder(batch["x"], batch["lengths"])
    assert model.scored_steps(batch, encoded.mask).device.type == "meta"
    assert model.scored_steps(batch).device.type == "meta"  # made from the host lengths
    assert model.rollout(batch["x"], batch["lengths"], 2).shape == (3, 2, 3)
    model(batch["x"], batch["lengths"]).sum().backward()


@pytest.mark.parametrize("augment", [add_input_noise, shift_channels, time_warp])
def test_augmentations_after_the_transfer_keep_the_lengths_on_the_host(augment) -> None:
    """The data modules augment in ``on_after_batch_transfer``: x on the device, lengths not."""
    batch = build("classifier", ENCODER).transfer_batch_to_device(padded_batch(), META, 0)
    augmented = augment(batch, 0.1)
    assert augmented["x"].device.type == "meta"
    assert augmented["lengths"].device.type == "cpu"


def test_lightning_sends_batches_through_the_tasks_hook_beside_a_data_module(tmp_path) -> None:
    hook_returned: list[torch.Tensor] = []
    step_received: list[torch.Tensor] = []

    class Recording(SequenceForecaster):
        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            moved = super().transfer_batch_to_device(batch, device, dataloader_idx)
            hook_returned.append(moved["lengths"])
            return moved

        def training_step(self, batch, batch_idx):
            step_received.append(batch["lengths"])
            return super().training_step(batch, batch_idx)

    data = SineDataModule(
        seq_len=12, min_len=4, rollout_horizon=0, train_size=8, val_size=4, test_size=4
    )
    data.batch_size = 4
    model = Recording(1, encoder=ENCODER, optimizer=OPTIMIZER)
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    assert len(step_received) == 2
    assert all(got is sent for got, sent in zip(step_received, hook_returned, strict=False))
    assert {lengths.device.type for lengths in step_received} == {"cpu"}
