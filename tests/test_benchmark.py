"""scripts/benchmark.py --quick runs in-process and writes the documented JSON.

Timings on a shared machine say nothing in a test: only structure and equalities are checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import cli, padded, train_loop


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run of every section (a few seconds), read back from its JSON file."""
    path = tmp_path_factory.mktemp("benchmark") / "bench.json"
    cli.main(["--quick", "--json", str(path)])
    return json.loads(Path(path).read_text())


def test_default_run_covers_every_section(quick_results: dict[str, Any]) -> None:
    assert {"environment", "args", "sections", "total_seconds"} <= quick_results.keys()
    assert list(quick_results["sections"]) == list(cli.SECTIONS)


def test_quick_benchmark_writes_timings_ratios_and_precisions(quick_results):
    encoder = quick_results["sections"]["encoder"]
    assert encoder["matmul_gflops"] > 0
    for direction in ("unidirectional", "bidirectional"):
        entry = encoder["directions"][direction]
        assert entry["max_abs_difference_vs_fused"]["loop"] < 1e-4
        for pass_name in ("forward", "forward_backward"):
            timings = entry[pass_name]["timings"]
            assert {"fused", "loop"} <= timings.keys()
            assert {"best_s", "median_s", "gflops", "share_of_matmul"} <= timings["loop"].keys()
            assert entry[pass_name]["ratio_to_fused"]["loop"] > 0
    assert "fp32" in encoder["precision"]["fused"]["forward"]["timings"]


def test_lightning_and_raw_loop_take_the_same_steps(quick_results: dict[str, Any]) -> None:
    train = quick_results["sections"]["train"]
    assert set(train) == {"default", "tiny"}
    for label, entry in train.items():
        assert entry["losses_agree_to_5_decimals"], label
        assert set(entry["max_abs_loss_difference_vs_lightning"]) >= {"raw", "raw+metrics"}
        assert max(entry["max_abs_loss_difference_vs_lightning"].values()) <= 1e-5
        assert {"raw", "raw+metrics", "lightning"} <= entry["loops"].keys()
        for loop in entry["loops"].values():
            assert {"work", "step_s", "step_s_min", "step_s_rounds", "run_seconds"} <= loop.keys()
            assert loop["step_mean_s"] > 0 and len(loop["step_mean_s_rounds"]) == 1
            assert set(loop["run_seconds"]) == {str(n) for n in entry["config"]["steps"]}
        for overhead in entry["overhead"].values():
            wanted = {"ms", "percent", "allowed_ms", "target_met", "from_totals_ms"}
            assert wanted <= overhead.keys()
            assert overhead["allowed_ms"] >= 1.0
            assert isinstance(overhead["target_met"], bool)
        # The paired design ran, and its twin took Lightning's steps loss for loss.
        assert "paired raw+metrics" in entry["max_abs_loss_difference_vs_lightning"]
        paired = entry["paired"]
        assert {"ms", "standard_error_ms", "median_ms", "allowed_ms", "target_met"} <= paired.keys()
        assert (
            paired["pairs"] + paired["pairs_left_out"]
            == (paired["steps"] - 1 - paired["skipped_steps"]) * paired["runs"]
        )
    assert "lightning-no-log" in train["tiny"]["loops"]
    assert {"cost_of_self_log_ms", "lightning_loop_cost_ms"} <= train["tiny"].keys()


def test_data_section_compares_delivery_with_consumption(quick_results: dict[str, Any]) -> None:
    data = quick_results["sections"]["data"]
    assert set(data) == set(quick_results["args"]["data_sets"].split(","))
    for entry in data.values():
        assert entry["delivered_batches_per_s"] > 0
        assert entry["consumed_steps_per_s"] > 0
        assert entry["ratio"] == pytest.approx(
            entry["delivered_batches_per_s"] / entry["consumed_steps_per_s"]
        )
        assert isinstance(entry["target_met"], bool)
    # The training section timed the same data and model: its figure is reused, not re-measured.
    assert data["japanese_vowels"]["consumed_from"] == "train section"
    assert data["adding"]["consumed_from"] == "measured here"


def test_runs_start_from_the_same_weights_and_gradients(tmp_path: Path) -> None:
    """A Lightning fit leaves the last step's gradients behind; the next run must not add to
    them, or the loops would train differently and the loss check would fail."""
    cfg, datamodule, _ = train_loop.build_for_benchmark(train_loop.TINY_MODEL, tmp_path)
    setup = train_loop.prepare_training(cfg, datamodule, 4, torch.device("cpu"))
    with train_loop.quiet_lightning():
        lightning = train_loop.lightning_run(setup, 4)
    assert any(p.grad is not None for p in setup.model.parameters())
    raw = train_loop.raw_run(setup, 4, metrics=False)
    assert raw.losses == pytest.approx(lightning.losses, abs=1e-6)
    # Both loops stamp the clock at the start of every step: 3 whole steps between 4 starts.
    assert len(raw.step_seconds) == len(lightning.step_seconds) == 3
    assert all(value > 0 for value in raw.step_seconds + lightning.step_seconds)


def test_a_stalled_step_is_left_out_of_the_typical_mean() -> None:
    steps = [0.010, 0.011, 0.009, 0.012, 0.010, 0.5]  # the last one stalled by the machine
    assert train_loop.typical_step_mean(steps) == pytest.approx(0.0104)
    # A cost paid every few steps is well under 3x the median and stays in.
    assert train_loop.typical_step_mean([0.010] * 4 + [0.014]) == pytest.approx(0.0108)


def test_unknown_section_is_rejected(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--sections", "encoder,nonsense"])
    assert "nonsense" in capsys.readouterr().err


def test_bucketing_section_counts_padding_both_ways(quick_results: dict[str, Any]) -> None:
    entry = quick_results["sections"]["bucketing"]["japanese_vowels data.batch_size=16"]
    for name in ("plain", "bucketed"):
        assert entry[name]["epoch_s"] > 0 and entry[name]["batches"] > 0
    # The same samples both ways: as many real steps, far fewer padded ones when bucketed.
    assert entry["plain"]["real_steps"] == entry["bucketed"]["real_steps"] > 0
    assert entry["bucketed"]["padded_steps"] < entry["plain"]["padded_steps"]
    assert (
        entry["padded_ratio"] == entry["bucketed"]["padded_steps"] / entry["plain"]["padded_steps"]
    )


def test_padded_section_times_runs_and_packing(quick_results: dict[str, Any]) -> None:
    (entry,) = quick_results["sections"]["padded"].values()
    assert entry["runs_s"] > 0 and entry["packed_s"] > 0
    assert entry["ratio"] == entry["runs_s"] / entry["packed_s"]
    assert 1 <= entry["distinct_lengths"] <= 16


def test_padded_section_compares_the_two_paths_it_names(monkeypatch) -> None:
    from seqlab.nn import LSTM

    calls: list[int] = []
    runs = LSTM._fused_runs
    monkeypatch.setattr(LSTM, "_fused_runs", lambda *a: calls.append(1) or runs(*a))
    model = LSTM(3, 4, batch_first=True)
    x, lengths = torch.randn(4, 20, 3), torch.tensor([20, 20, 5, 5])
    padded._step(model, x, lengths, packed=True)()
    assert not calls
    padded._step(model, x, lengths, packed=False)()
    assert calls == [1]


def test_paired_overhead_takes_each_step_against_its_twin() -> None:
    """Lightning's extra time is the mean of per-step differences after the skipped steps; a
    pair where either step stalled is left out, whichever side stalled."""
    lightning = [0.050, 0.050, 0.0110, 0.0120, 0.0110, 0.0115, 0.5, 0.0112]
    raw = [0.040, 0.040, 0.0100, 0.0100, 0.0105, 0.0100, 0.0100, 0.3]
    runs = [train_loop.PairedSteps(lightning, raw, [], [])]
    result = train_loop.paired_overhead(runs, skip=2)
    # Kept pairs: (11.0, 10.0), (12.0, 10.0), (11.0, 10.5), (11.5, 10.0): 1.0, 2.0, 0.5, 1.5 ms.
    assert result["pairs"] == 4 and result["pairs_left_out"] == 2
    assert result["ms"] == pytest.approx(1.25)
    assert result["raw_step_ms"] == pytest.approx(10.125)
    assert result["allowed_ms"] == pytest.approx(1.0)
    assert result["target_met"] is False
    assert result["ms_runs"] == [pytest.approx(1.25)]
