"""An exported model gives the checkpoint's outputs (to 1e-5) on batches of any size and
mixed lengths, through torch.export and ONNX alike."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from seqlab import export as export_module
from seqlab.errors import UserError
from seqlab.export import ExportableModel, MaskedLSTM, export, run_onnx
from seqlab.nn import LSTMEncoder
from seqlab.pipeline import build_datamodule, task_class
from seqlab.train import train

TOLERANCE = 1e-5
HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"bidirectional": True},
        {"bidirectional": True, "num_layers": 3, "proj_size": 5},
        {"impl": "loop", "bidirectional": True, "forget_bias": 1.0},
        {"init_state": "learned"},
    ],
    ids=["uni", "bi", "bi-3-layers-proj", "loop-bi", "learned-state"],
)
def test_masked_lstm_equals_seqlab_lstm_on_mixed_lengths(options: dict) -> None:
    torch.manual_seed(0)
    encoder = LSTMEncoder(4, 8, **{"num_layers": 2, **options}).eval()
    x, lengths = torch.randn(5, 9, 4), torch.tensor([9, 3, 1, 7, 9])
    x[1, 3:] = 1e3  # padding that would show if it leaked
    with torch.no_grad():
        expected, (h, c) = encoder.lstm(x, lengths=lengths)
        actual, (h_masked, c_masked) = MaskedLSTM(encoder.lstm)(x, lengths=lengths)
    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(h_masked, h, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(c_masked, c, atol=TOLERANCE, rtol=0)


def test_layer_norm_lstm_is_refused() -> None:
    encoder = LSTMEncoder(4, 8, layer_norm=True)
    with pytest.raises(ValueError, match="layer_norm=true"):
        MaskedLSTM(encoder.lstm)


def trained_checkpoint(make_cfg, *overrides: str) -> tuple[DictConfig, Path]:
    cfg = make_cfg(*overrides, "callbacks.plots=null")
    train(cfg)
    return cfg, Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def other_batches(cfg: DictConfig) -> list[dict[str, torch.Tensor]]:
    """Batches unlike the one export traced with: another size and mixed lengths."""
    datamodule = build_datamodule(cfg)
    data = datamodule.datasets["val"]
    samples = [data[i] for i in range(min(len(data), 40))]
    first = datamodule.collate(samples)
    single = datamodule.collate(samples[:1])
    assert len(set(first["lengths"].tolist())) > 1
    return [first, single]


FORMATS = ["torch_export", "onnx"] if HAS_ONNX else ["torch_export"]


@pytest.mark.parametrize(
    "data",
    [
        ["model=bilstm"],
        ["model=bilstm", "model.encoder.conv_channels=[8,6]", "model.encoder.conv_kernel_size=3"],
        ["model=bilstm", "model.encoder.conv_channels=[8]", "model.encoder.conv_mode=parallel"],
        ["data=sine", "data.train_size=64", "data.val_size=16", "data.test_size=16",
         "data.seq_len=40", "data.min_len=20", "data.rollout_horizon=5"],
    ],
    ids=["bilstm-classifier", "conv-bilstm-classifier", "lstm-fcn-classifier", "forecaster"],
)  # fmt: skip
def test_exported_model_equals_the_checkpoint(make_cfg, data: list[str]) -> None:
    """Each format (ONNX when onnx, onnxscript and onnxruntime are installed: the ``export``
    extra) on the batch export traced with, then on a larger one and a single sequence."""
    cfg, ckpt = trained_checkpoint(make_cfg, *data)
    model = task_class(build_datamodule(cfg)).load_from_checkpoint(ckpt, map_location="cpu").eval()
    data_only = [o for o in data if o.startswith("data")]
    for fmt in FORMATS:
        export_cfg = make_cfg(
            *data_only, f"ckpt_path={ckpt}", f"format={fmt}", name="export", tiny=False
        )
        summary = export(export_cfg)
        assert summary["max_abs_diff"] <= TOLERANCE, fmt
        assert json.loads((Path(cfg.paths.output_dir) / "export.json").read_text()) == summary

        path = Path(summary["path"])
        for batch in other_batches(cfg):
            inputs = (batch["x"], batch["lengths"])
            with torch.no_grad():
                expected = model(*inputs)
                if fmt == "torch_export":
                    actual = torch.export.load(path).module()(*inputs)
                else:
                    actual = run_onnx(path, inputs)
            assert actual.shape == expected.shape
            torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0)


def test_an_export_that_differs_from_the_checkpoint_fails_and_keeps_nothing(
    make_cfg, monkeypatch
) -> None:
    cfg, ckpt = trained_checkpoint(make_cfg)
    monkeypatch.setattr(export_module, "max_abs_diff", lambda actual, expected: 0.5)
    with pytest.raises(UserError, match=r"differs from the checkpoint's by up to 0\.5 on a test"):
        export(make_cfg(f"ckpt_path={ckpt}", name="export", tiny=False))
    run_dir = Path(cfg.paths.output_dir)
    assert not list(run_dir.glob("model*.pt2")) and not (run_dir / "export.json").exists()


def test_language_model_exports_from_ids(make_cfg, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 100, encoding="utf-8")
    data = ["data=text", f"data.path={corpus}", "data.batch_size=4", "data.bptt=32"]
    _, ckpt = trained_checkpoint(make_cfg, *data)
    export_cfg = make_cfg(*data, f"ckpt_path={ckpt}", name="export", tiny=False)
    summary = export(export_cfg)
    assert summary["inputs"] == ["ids (B, T) int64"]
    assert summary["max_abs_diff"] <= TOLERANCE
    program = torch.export.load(summary["path"]).module()
    ids = torch.randint(1, 10, (3, 11))
    model = ExportableModel(task_class(build_datamodule(export_cfg)).load_from_checkpoint(ckpt))
    with torch.no_grad():
        torch.testing.assert_close(program(ids), model.task(ids)[0], atol=TOLERANCE, rtol=0)


def test_unknown_format_is_refused(make_cfg) -> None:
    cfg = make_cfg("ckpt_path=x.ckpt", "format=tflite", name="export", tiny=False)
    with pytest.raises(ValueError, match="format='tflite': allowed: torch_export, onnx"):
        export(cfg)
