"""The pieces of `data=ucr`'s recipe, each against a small oracle: squeeze-and-excitation over
real steps, the LSTM-FCN encoder it feeds, downsampling, per-series normalisation, the batch
size and the number of epochs taken from the data's size, and the configs that bind them."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from seqlab.data.base import auto_batch_size, downsample_factor
from seqlab.data.collate import downsample
from seqlab.data.normalize import (
    SeriesScale,
    carries_no_scale,
    fit_normalizer,
    normalize_mode,
    resolve_normalize,
    standardize_series,
)
from seqlab.data.ucr import UCRDataModule
from seqlab.errors import ConfigError
from seqlab.nn import LSTMEncoder
from seqlab.nn.conv import ConvFrontEnd, SqueezeExcite
from seqlab.pipeline import epoch_budget, resolve_epochs
from tests.conftest import TINY
from tests.test_conv import LENGTHS, padded, trained_statistics
from tests.test_data_validation import write_ts


def test_squeeze_excite_gates_each_channel_by_its_mean_over_real_steps():
    torch.manual_seed(0)
    block = SqueezeExcite(32, reduction=16)
    h = torch.randn(4, 32, 9)
    mask = torch.arange(9) < LENGTHS.unsqueeze(1)
    out = block(h, mask)
    linear1, linear2 = block.gate[0], block.gate[2]
    for b, length in enumerate(LENGTHS.tolist()):
        squeezed = h[b, :, :length].mean(-1)  # (32,)
        gate = torch.sigmoid(linear2(torch.relu(linear1(squeezed))))
        assert linear1.out_features == 2
        torch.testing.assert_close(out[b, :, :length], h[b, :, :length] * gate[:, None])
    torch.testing.assert_close(block(h), h * block.gate(h.mean(-1)).unsqueeze(-1))


@pytest.mark.parametrize("train", [False, True])
def test_a_front_end_with_squeeze_excite_is_independent_of_padding(train):
    torch.manual_seed(0)
    frontend = ConvFrontEnd(3, [8, 16, 5], kernel_size=[5, 3, 3], squeeze_excite=True)
    assert len(frontend.excites) == 2  # after every layer but the last
    trained_statistics(frontend)
    frontend.train(train)
    x = padded(LENGTHS, 9, 3, fill=50.0)
    wider = torch.cat([x, torch.full((4, 4, 3), -9.0)], dim=1)
    out = frontend(x, torch.arange(9) < LENGTHS.unsqueeze(1))
    out_wider = frontend(wider, torch.arange(13) < LENGTHS.unsqueeze(1))
    torch.testing.assert_close(out, out_wider[:, :9])
    if not train:  # running statistics: each sequence alone gives the same
        for b, length in enumerate(LENGTHS.tolist()):
            torch.testing.assert_close(frontend(x[b : b + 1, :length])[0], out[b, :length])


def test_lstm_fcn_reads_a_full_batch_with_or_without_lengths_alike():
    """The unmasked fast path taken for a batch without padding gives the masked numbers."""
    torch.manual_seed(0)
    encoder = LSTMEncoder(
        2,
        8,
        1,
        conv_channels=[8, 16, 8],
        conv_kernel_size=[7, 5, 3],
        conv_mode="parallel",
        conv_squeeze_excite=True,
    ).train()
    x = torch.randn(3, 11, 2)
    full = torch.full((3,), 11)
    torch.manual_seed(1)
    fast = encoder(x, full).features
    mask = torch.ones(3, 11, dtype=torch.bool)
    conv = encoder.frontend(x, mask)  # the masked path, forced
    torch.testing.assert_close(fast[:, 8:], conv.mean(1))
    assert encoder.output_size == 16


def test_downsample_averages_runs_of_k_steps_and_a_short_last_run():
    x = torch.arange(14, dtype=torch.float32).view(7, 2)  # steps 0..6, two channels
    out = downsample(x, 3)
    expected = np.stack([x[0:3].mean(0), x[3:6].mean(0), x[6:7].mean(0)])
    np.testing.assert_allclose(out.numpy(), expected)
    assert downsample(x, 1) is x
    assert downsample(x, 7).shape == (1, 2) and downsample(x, 9).shape == (1, 2)


@pytest.mark.parametrize(
    ("longest", "max_length", "factor"),
    [(1460, 512, 3), (512, 512, 1), (513, 512, 2), (2000, 512, 4), (29, None, 1), (10, 1, 10)],
)
def test_downsample_factor_is_the_smallest_that_fits(longest, max_length, factor):
    assert downsample_factor(longest, max_length) == factor
    if max_length is not None:
        assert -(-longest // factor) <= max_length
        assert factor == 1 or -(-longest // (factor - 1)) > max_length


def test_standardize_series_zscores_each_channel_over_its_own_steps():
    torch.manual_seed(0)
    x = torch.randn(20, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([3.0, -2.0, 10.0])
    x[:, 2] = 4.0  # a constant channel is only centred
    out = standardize_series(x)
    expected = (x.numpy() - x.numpy().mean(0)) / np.maximum(x.numpy().std(0), 1e-6)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[:, 2], torch.zeros(20))
    assert standardize_series(torch.tensor([[5.0, 1.0]])).tolist() == [[0.0, 0.0]]


def zscored(rng, count, length, ddof=0):
    x = rng.normal(size=(count, length, 1))
    return list((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True, ddof=ddof))


@pytest.mark.parametrize("ddof", [0, 1])
def test_auto_normalisation_reads_the_training_sequences(ddof):
    rng = np.random.default_rng(0)
    # Stored z-scored, with either convention for the spread (ItalyPowerDemand's is 0.979).
    stored = zscored(rng, 30, 24, ddof)
    assert carries_no_scale(stored) and resolve_normalize("auto", stored) == "series"
    # Levels or spreads that differ between sequences are information: kept as channels.
    raw = [x * rng.uniform(0.5, 5) + rng.normal() for x in stored]
    assert not carries_no_scale(raw) and resolve_normalize("auto", raw) == "series_scale"
    assert resolve_normalize("auto", [x + 0.5 * i for i, x in enumerate(stored)]) == "series_scale"
    assert resolve_normalize("auto", [np.repeat(x, 3, axis=1) for x in stored]) == "channel"
    assert resolve_normalize("none", raw) == "none"


def test_series_scale_adds_each_sequence_level_and_spread_as_channels():
    """Against numpy: asinh(mean / unit) and log(std / unit + 1e-3), unit the training
    sequences' (lower) median spread, z-scored over the training sequences, clipped at 6."""
    rng = np.random.default_rng(1)
    sizes = zip(
        rng.integers(5, 40, 12), rng.uniform(0.1, 10, 12), rng.normal(0, 50, 12), strict=True
    )
    train = [rng.normal(size=(int(n), 2)) * [3.0, 0.01] * s + [m, -m] for n, s, m in sizes]
    train = [x.astype(np.float32).astype(np.float64) for x in train]  # what the model reads
    scale = fit_normalizer("series_scale", [torch.from_numpy(x).float() for x in train])
    assert isinstance(scale, SeriesScale)

    def features(x, unit):
        return np.concatenate([np.arcsinh(x.mean(0) / unit), np.log(x.std(0) / unit + 1e-3)])

    spreads = np.sort([x.std(0) for x in train], axis=0)
    unit = spreads[(len(train) - 1) // 2]  # torch's median: the lower of the middle two
    f_train = np.stack([features(x, unit) for x in train])
    mean, std = f_train.mean(0), f_train.std(0)
    outs = [scale(torch.from_numpy(x).float()) for x in train]
    for x, out in zip(train, outs, strict=True):
        assert out.shape == (len(x), 6) and out.dtype == torch.float32
        torch.testing.assert_close(out[:, :2], standardize_series(torch.from_numpy(x).float()))
        expected = (features(x, unit) - mean) / std
        np.testing.assert_allclose(out[:, 2:].numpy(), np.tile(expected, (len(x), 1)), atol=1e-4)
    # Over the training sequences the new channels are z-scores.
    stacked = np.stack([out[0, 2:].numpy() for out in outs])
    np.testing.assert_allclose(stacked.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(stacked.std(0), 1, atol=1e-4)
    # A sequence far outside the training ones is clipped, not amplified without bound.
    far = scale(torch.full((7, 2), 1e9) + torch.arange(7.0)[:, None])
    assert torch.isfinite(far).all() and far[:, 2:].abs().max() == SeriesScale.CLIP


def test_series_scale_on_features_that_never_vary_only_centres_them():
    same = [torch.arange(10.0)[:, None] for _ in range(4)]
    scale = SeriesScale.fit(same)
    out = scale(same[0])
    assert torch.equal(out[:, 1:], torch.zeros(10, 2))
    shifted = scale(same[0] + 1e-3)
    assert torch.isfinite(shifted).all() and shifted[:, 1:].abs().max() < 1


def test_auto_normalisation_of_the_bundled_sets(tmp_path):
    # Covid3Month_disc is stored raw (0 to 20,341): each series reads as a z-score, its level
    # and spread as two more channels; GunPoint is stored z-scored: nothing is added.
    covid = UCRDataModule("Covid3Month_disc", tmp_path, normalize="auto", val_fraction=0)
    covid.setup("fit")
    assert covid.normalize == "series_scale" and covid.input_size == 3
    for x, _ in list(covid.datasets["train"])[:5] + list(covid.datasets["test"])[:5]:
        assert abs(float(x[:, 0].mean())) < 1e-4
        assert abs(float(x[:, 0].std(unbiased=False)) - 1) < 1e-3
        assert torch.equal(x[:, 1:], x[:1, 1:].expand(len(x), 2))
    gunpoint = UCRDataModule("GunPoint", tmp_path, normalize="auto", val_fraction=0)
    gunpoint.setup("fit")
    assert gunpoint.normalize == "series" and gunpoint.input_size == 1
    motions = UCRDataModule("BasicMotions", tmp_path, normalize="auto", val_fraction=0)
    motions.setup("fit")
    assert motions.normalize == "channel" and motions.normalizer is not None


def test_normalize_takes_a_mode_or_the_old_booleans():
    assert [normalize_mode(v) for v in (True, False, "series")] == ["channel", "none", "series"]
    with pytest.raises(
        ConfigError, match=r"data\.normalize='zscore': allowed: channel, series, series_scale"
    ):
        normalize_mode("zscore")


@pytest.mark.parametrize(("samples", "size"), [(2, 8), (28, 8), (120, 12), (160, 16), (10**5, 16)])
def test_auto_batch_size_is_a_tenth_of_the_training_split_within_8_and_16(samples, size):
    assert auto_batch_size(samples) == size


@pytest.mark.parametrize(
    ("batches", "epochs"), [(1, 1000), (5, 300), (7, 215), (75, 20), (10**4, 20)]
)
def test_the_epoch_budget_takes_about_the_step_budget_within_its_bounds(batches, epochs):
    assert epoch_budget(batches, steps=1500, min_epochs=20, max_epochs=1000) == epochs


def test_ucr_options_reach_the_data(tmp_path):
    """series normalisation, max_length and batch_size=auto on a bundled set (ACSF1: 100
    training series of 1460 steps)."""
    datamodule = UCRDataModule(
        "ACSF1", tmp_path, normalize="series", max_length=512, batch_size="auto", val_fraction=0
    )
    datamodule.setup("fit")
    assert datamodule.downsample_factor == 3 and datamodule.batch_size == 10
    x, _ = datamodule.datasets["train"][0]
    assert x.shape == (487, 1)
    torch.testing.assert_close(x.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(unbiased=False), torch.tensor(1.0), atol=1e-4, rtol=0)
    test_x, _ = datamodule.datasets["test"][0]
    assert test_x.shape == (487, 1) and datamodule.normalizer is standardize_series


def test_data_ucr_brings_its_recipe_and_a_model_on_the_command_line_wins(make_cfg):
    cfg = make_cfg("data=ucr", "data.name=GunPoint", tiny=False)
    assert cfg.model.encoder.conv_mode == "parallel" and cfg.model.encoder.conv_squeeze_excite
    assert cfg.trainer.max_epochs == "auto" and cfg.data.batch_size == "auto"
    assert cfg.data.val_fraction == 0 and cfg.data.max_length == 512
    assert cfg.data.normalize == "auto"
    assert cfg.model.encoder.hidden_size == 8 and cfg.budget.steps == 4000
    cfg = make_cfg("data=ucr", "model=bilstm", tiny=False)
    assert cfg.model.encoder.conv_channels == [] and cfg.model.encoder.bidirectional
    cfg = make_cfg("data=ucr", "model=bilstm_fcn", "trainer.max_epochs=3", tiny=False)
    assert cfg.model.encoder.bidirectional and cfg.model.encoder.conv_mode == "parallel"
    assert cfg.trainer.max_epochs == 3
    # The pinned configs keep their own model and schedule.
    cfg = make_cfg(tiny=False)
    assert cfg.model.encoder.conv_channels == [] and cfg.trainer.max_epochs == 80
    assert cfg.data.batch_size == 32
    cfg = make_cfg("experiment=italy_power_demand", tiny=False)
    assert cfg.model.encoder.hidden_size == 32 and cfg.trainer.max_epochs == 150


@pytest.mark.parametrize("entry", ["eval", "predict", "export"])
def test_data_ucr_composes_for_every_entry_point(make_cfg, entry):
    cfg = make_cfg("data=ucr", "data.name=GunPoint", "ckpt_path=x.ckpt", name=entry, tiny=False)
    assert cfg.data.name == "GunPoint" and cfg.data.max_length == 512


def resolved_on_gunpoint(make_cfg, *overrides):
    """The composed ``data=ucr`` config of GunPoint, its ``auto`` epochs resolved."""
    cfg = make_cfg("data=ucr", "data.name=GunPoint", *overrides, tiny=False)
    datamodule = UCRDataModule(**{k: v for k, v in cfg.data.items() if k != "_target_"})
    datamodule.setup("fit")
    resolve_epochs(cfg, datamodule)
    return cfg


def test_auto_epochs_follow_the_training_split_and_the_schedule_follows_them(make_cfg):
    cfg = resolved_on_gunpoint(make_cfg, "budget.steps=100")
    # 50 series, batches of 8: 7 a epoch, 100 steps are 15 epochs, raised to min_epochs.
    assert cfg.trainer.max_epochs == 20
    assert OmegaConf.to_container(cfg.model.scheduler, resolve=True)["T_max"] == 20


def test_the_input_step_cap_reaches_the_epochs_and_a_data_module_must_count_for_it(make_cfg):
    cfg = resolved_on_gunpoint(make_cfg, "budget.max_input_steps=75000")
    # 50 series of 150 steps: 7,500 a epoch, 10 epochs under the cap (572 without it).
    assert cfg.trainer.max_epochs == 10

    class Uncounted(L.LightningDataModule):
        def train_dataloader(self):
            return [0, 1, 2]

    cfg = make_cfg("data=ucr", "data.name=GunPoint", tiny=False)
    with pytest.raises(ConfigError, match=r"budget.max_input_steps=18000000: Uncounted cannot"):
        resolve_epochs(cfg, Uncounted())
    with open_dict(cfg):
        cfg.budget.max_input_steps = None
    resolve_epochs(cfg, Uncounted())
    assert cfg.trainer.max_epochs == 1000  # 3 batches: 1,334 epochs wanted, max_epochs wins


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("budget.steps=0", "budget.steps=0: must be a positive integer"),
        ("budget.min_epochs=2000", "budget.min_epochs=2000: must be <= budget.max_epochs=1000"),
        ("trainer.max_epochs=many", "trainer.max_epochs='many': must be a positive integer"),
        ("budget.max_input_steps=0", "budget.max_input_steps=0: must be a positive integer"),
    ],
)
def test_a_bad_budget_is_refused_before_training(make_cfg, override, message):
    from seqlab.config_checks import check_config

    cfg = make_cfg("data=ucr", override, tiny=False)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_data_ucr_fits_the_whole_training_file_and_tests_its_final_weights(
    make_cfg, tmp_path, monkeypatch
):
    from seqlab.data.ucr import UCRDataModule
    from seqlab.train import train

    # No validation split: the loop is off, so its (empty) loader is never even asked for.
    def no_validation_loader(self):
        raise AssertionError("validation ran without a validation split")

    monkeypatch.setattr(UCRDataModule, "val_dataloader", no_validation_loader)
    cfg = make_cfg(
        *[option for option in TINY if not option.startswith("trainer.max_epochs")],
        "data=ucr",
        "data.name=UnitTest",
        "budget.steps=4",
        "budget.min_epochs=2",
        "model.encoder.conv_channels=[4,8,4]",
        tiny=False,
    )
    metrics = train(cfg)
    # 20 series, batches of 8: 3 a epoch, 4 steps are 2 epochs.
    assert cfg.trainer.max_epochs == 2
    assert 0 <= metrics["test/acc"] <= 1 and "val/loss_best" not in metrics
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["epoch_001.ckpt", "last.ckpt"]  # the final epoch, not a val pick


@pytest.mark.parametrize(
    ("batches", "per_epoch", "epochs"),
    [
        (13, 85_400, 210),  # OSULeaf: 200 x 427 steps, 308 epochs uncapped
        (34, 112_279, 118),  # PLAID after averaging, its batches padded: 13.2 million, kept
        (226, 1_800_500, 9),  # 3,601 x 500 steps: the cap wins over min_epochs=20
        (226, 30_000_000, 1),  # an epoch over the cap still trains one epoch
    ],
)
def test_the_input_step_cap_bounds_what_a_run_costs(batches, per_epoch, epochs):
    got = epoch_budget(
        batches,
        steps=4000,
        min_epochs=20,
        max_epochs=1000,
        input_steps_per_epoch=per_epoch,
        max_input_steps=18_000_000,
    )
    assert got == epochs
    assert epoch_budget(batches, 4000, 20, 1000, input_steps_per_epoch=per_epoch) >= epochs


def write_ucr_files(folder, name, lengths, rng):
    """``<name>_TRAIN.ts`` with one random series of each length (two classes), and a TEST."""
    for split, sizes in (("TRAIN", lengths), ("TEST", lengths[:6])):
        rows = [
            ",".join(f"{v:.4f}" for v in rng.normal(size=t)) + (":a" if i % 2 else ":b")
            for i, t in enumerate(sizes)
        ]
        write_ts(folder, name, split, rows)


@pytest.mark.parametrize("bucketing", [False, True])
def test_a_data_module_counts_the_time_steps_its_training_epoch_feeds_the_model(
    tmp_path, bucketing
):
    """Oracle: the batches the training loader yields in epoch 0, padding included."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=45).tolist()
    write_ucr_files(tmp_path, "Vary", lengths, rng)
    datamodule = UCRDataModule(
        "Vary", tmp_path, batch_size=8, val_fraction=0, max_length=None, bucketing=bucketing
    )
    datamodule.setup("fit")
    fed = sum(batch["x"].shape[0] * batch["x"].shape[1] for batch in datamodule.train_dataloader())
    assert datamodule.input_steps_per_epoch() == fed
    assert fed > sum(lengths)  # random batches of lengths 5-59 pad
