"""scripts/benchmark.py --quick runs in-process and writes the documented JSON."""

from __future__ import annotations

import json

import pytest

from seqlab.utils import benchmark


def test_quick_benchmark_writes_timings_ratios_and_precisions(tmp_path):
    path = tmp_path / "bench.json"
    benchmark.main(["--quick", "--json", str(path)])
    results = json.loads(path.read_text())
    assert {"environment", "args", "sections", "total_seconds"} <= results.keys()
    encoder = results["sections"]["encoder"]
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


def test_unknown_section_is_rejected(capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--sections", "encoder,nonsense"])
    assert "nonsense" in capsys.readouterr().err
