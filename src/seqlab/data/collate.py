"""Turn a list of variable-length sequences into one padded batch with lengths."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from seqlab.nn.masking import lengths_on, lengths_to_mask

Batch = dict[str, Tensor]


def pad_collate(samples: Sequence[tuple[Tensor, Tensor]], pad_targets: bool = False) -> Batch:
    """Pad a list of ``(x (T_i, C), y)`` samples into a batch.

    Returns ``{"x": (B, T_max, C), "lengths": (B,) int64, "y": (B, ...)}``. Padding is zeros;
    the model uses ``lengths`` (which stay on the CPU: `SequenceTask.transfer_batch_to_device`)
    so padded steps never enter the recurrence. With
    ``pad_targets`` each ``y`` is a per-step target ``(T_i, ...)`` padded the same way
    (``y: (B, T_max, ...)``); otherwise targets are stacked.
    """
    xs = [x for x, _ in samples]
    ys = [y for _, y in samples]
    lengths = torch.tensor([x.shape[0] for x in xs], dtype=torch.long)
    x = pad_sequence(xs, batch_first=True)
    y = pad_sequence(ys, batch_first=True) if pad_targets else torch.stack(ys)
    return {"x": x, "lengths": lengths, "y": y}


def add_input_noise(batch: Batch, noise_std: float) -> Batch:
    """Gaussian noise of ``noise_std`` added to every real input step of a padded batch.

    A training-time augmentation for continuous inputs: small sets such as JapaneseVowels (270
    utterances) are fitted perfectly within a few epochs, and jittered inputs are what keeps the
    test accuracy up. Padding stays exactly zero. It draws from torch's global generator, so
    data modules call it in the training process (``on_after_batch_transfer``), never in a
    loader worker: a resumed run then restores the exact noise with the generator's state.
    """
    x = batch["x"]
    real = lengths_to_mask(lengths_on(batch["lengths"], x.device), x.shape[1])  # (B, T)
    return {**batch, "x": x + noise_std * torch.randn_like(x) * real.unsqueeze(-1)}


def shift_channels(batch: Batch, shift_std: float) -> Batch:
    """A Gaussian offset of ``shift_std`` per sequence and channel, the same at every real step.

    Unlike ``add_input_noise`` (fresh at every step), this moves a whole sequence: for cepstral
    features such as JapaneseVowels' LPC cepstra, a fixed offset is what a different channel
    (microphone, room, session) does to an utterance. Padding stays zero; the draws come from
    torch's global generator, as with ``add_input_noise``.
    """
    x = batch["x"]
    real = lengths_to_mask(lengths_on(batch["lengths"], x.device), x.shape[1]).unsqueeze(-1)
    offset = shift_std * torch.randn(x.shape[0], 1, x.shape[2], dtype=x.dtype, device=x.device)
    return {**batch, "x": x + offset * real}


def resample(sequence: Tensor, length: int) -> Tensor:
    """A ``(T, C)`` sequence resampled in time to ``(length, C)`` by linear interpolation, its
    first and last steps kept where they are (a one-step sequence is repeated)."""
    resampled = F.interpolate(
        sequence.T.unsqueeze(0), size=length, mode="linear", align_corners=True
    )
    return resampled[0].T


def downsample(sequence: Tensor, factor: int) -> Tensor:
    """A ``(T, C)`` sequence averaged over runs of ``factor`` steps: ``(ceil(T / factor), C)``.

    The last run may be shorter and is averaged over the steps it has, so a sequence's result
    never depends on how long the others are (nor on padding).
    """
    if factor == 1:
        return sequence
    steps = sequence.shape[0]
    runs = -(-steps // factor)
    padded = F.pad(sequence.T, (0, runs * factor - steps)).view(sequence.shape[1], runs, factor)
    counts = torch.full((runs,), float(factor), dtype=sequence.dtype)
    counts[-1] = steps - (runs - 1) * factor
    return (padded.sum(-1) / counts).T


def time_warp(batch: Batch, max_stretch: float) -> Batch:
    """Each sequence resampled in time to ``length * s`` steps, ``s ~ U(1 - max_stretch,
    1 + max_stretch)``, by linear interpolation between its real steps.

    A training-time augmentation for many-to-one tasks on sampled signals (in speech: a
    different speaking rate). Per-step targets would fall out of step, so it is for batches
    whose ``y`` is one label per sequence. Lengths are updated, the batch is re-padded with
    zeros. It draws from torch's global generator, like ``add_input_noise``.
    """
    x, lengths = batch["x"], batch["lengths"]
    stretch = 1 + max_stretch * (2 * torch.rand(len(lengths)) - 1)
    new_lengths = (lengths.cpu() * stretch).round().clamp(min=1).long()
    warped = x.new_zeros(x.shape[0], int(new_lengths.max()), x.shape[2])
    for row, (length, new_length) in enumerate(
        zip(lengths.tolist(), new_lengths.tolist(), strict=True)
    ):
        warped[row, :new_length] = resample(x[row, :length], new_length)
    return {**batch, "x": warped, "lengths": new_lengths.to(lengths.device)}


class SequenceDataset(torch.utils.data.Dataset):
    """In-memory list of ``(x (T_i, C), y)`` pairs."""

    def __init__(self, inputs: Sequence[Tensor], targets: Sequence[Tensor] | Tensor) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs = list(inputs)
        self.targets = targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.targets[index]
