"""An exported model gives the checkpoint's outputs (to 1e-5) on batches of any size and
mixed lengths, through torch.export and ONNX alike, for seqlab's LSTM encoder and for another
registered encoder (a Transformer, as a fork would add); an encoder that does not trace is
refused, naming why, and leaves no file."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from seqlab import export as export_module
from seqlab.errors import UserError
from seqlab.export import (
    ExportableModel,
    export,
    export_onnx,
    export_program,
    run_onnx,
)
from seqlab.nn import ENCODERS, EncoderOutput, LSTMEncoder, MaskedLSTM, lengths_to_mask
from seqlab.pipeline import build_datamodule, task_class
from seqlab.tasks import SequenceClassifier
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


def guide_transformer() -> type[nn.Module]:
    """The Transformer encoder of docs/forking.md, run from the guide's own code block: the
    encoder a fork adds by following it, defined in this module (as `target` names it)."""
    from tests.test_forking_guide import BLOCKS

    (block,) = [b for b in BLOCKS if b.path == "src/seqlab/nn/transformer.py"]
    namespace: dict[str, object] = {"__name__": __name__}
    exec(compile(block.text, "docs/forking.md: src/seqlab/nn/transformer.py", "exec"), namespace)
    cls = namespace["TransformerEncoder"]
    assert isinstance(cls, type)
    return cls


TransformerEncoder = guide_transformer()


class BranchingEncoder(TransformerEncoder):
    """The Transformer, but a batch with no padding skips the mask: a Python branch on the
    lengths' values, which torch.export cannot follow."""

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: tuple[Tensor, Tensor] | None = None
    ) -> EncoderOutput:
        if lengths is not None and bool((lengths == x.size(1)).all()):
            lengths = None
        return super().forward(x, lengths, state)


class FixedStepsEncoder(nn.Module):
    """Features from one linear layer over all ``steps`` steps at once: sequences of that many
    steps only, so B exports free but T does not."""

    def __init__(self, input_size: int, hidden_size: int = 8, steps: int = 7) -> None:
        super().__init__()
        self.linear = nn.Linear(steps * input_size, hidden_size)
        self.output_size = hidden_size

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        features = self.linear(x.flatten(1))
        return EncoderOutput(features, features.unsqueeze(1), (features, features))


@torch.library.custom_op("seqlab_tests::twice", mutates_args=())
def twice(x: Tensor) -> Tensor:
    """A custom kernel: torch.export keeps it as one op, which ONNX has no translation for."""
    return x * 2


@twice.register_fake
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x)


class CustomOpEncoder(FixedStepsEncoder):
    """`FixedStepsEncoder` behind a custom kernel: exports with torch.export, not to ONNX."""

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        return super().forward(twice(x), lengths)


class WrappedLSTMEncoder(nn.Module):
    """A fork's encoder built on seqlab's: its LSTM is swapped for `MaskedLSTM` too."""

    def __init__(self, input_size: int, hidden_size: int = 8) -> None:
        super().__init__()
        self.inner = LSTMEncoder(input_size, hidden_size, bidirectional=True)
        self.output_size = self.inner.output_size

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        return self.inner(x, lengths)


TEST_ENCODERS = (
    TransformerEncoder,
    BranchingEncoder,
    FixedStepsEncoder,
    CustomOpEncoder,
    WrappedLSTMEncoder,
)


def target(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.fixture(autouse=True)
def _test_encoders_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """This file's encoders in `ENCODERS`, as a fork registers its own; undone after each test."""
    for cls in TEST_ENCODERS:
        monkeypatch.setitem(ENCODERS, target(cls), cls.__doc__ or cls.__name__)


def encoder_overrides(cls: type) -> list[str]:
    """Train with ``cls`` as the whole of model.encoder (none of the LSTM's keys), tiny, and
    for a couple of batches: the export, not the fit, is under test."""
    return [
        "~model.encoder",
        f"+model.encoder._target_={target(cls)}",
        "+model.encoder.hidden_size=16",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
    ]


def classifier(cls: type, **options: object) -> SequenceClassifier:
    """An untrained 3-channel, 2-class classifier on encoder ``cls``, in eval mode."""
    encoder = {"_target_": target(cls), **options}
    optimizer = {"_target_": "torch.optim.AdamW"}
    return SequenceClassifier(3, 2, encoder=encoder, optimizer=optimizer).eval()


def padded_batch(batch: int = 5, steps: int = 7) -> tuple[Tensor, Tensor]:
    """``x (B, T, 3)`` with zeros after each sequence's mixed ``lengths``."""
    lengths = torch.randint(1, steps + 1, (batch,))
    lengths[0] = steps
    x = torch.randn(batch, steps, 3) * lengths_to_mask(lengths, steps).unsqueeze(-1)
    return x, lengths


@pytest.mark.parametrize(
    "data",
    [
        # slow (~20 s): lstm-fcn-classifier exports the same bidirectional LSTM, beside convolutions
        pytest.param(["model=bilstm"], marks=pytest.mark.slow),
        pytest.param(  # slow (~20 s): lstm-fcn-classifier exports the same front end
            ["model=bilstm", "model.encoder.conv_channels=[8,6]", "model.encoder.conv_kernel_size=3"],
            marks=pytest.mark.slow,
        ),
        ["model=bilstm", "model.encoder.conv_channels=[8]", "model.encoder.conv_mode=parallel"],
        pytest.param(  # slow: the serial and parallel cases export each of its two paths
            ["model=bilstm", "model.encoder.conv_channels=[8]", "model.encoder.conv_mode=both"],
            marks=pytest.mark.slow,
        ),
        ["data=sine", "data.train_size=64", "data.val_size=16", "data.test_size=16",
         "data.seq_len=40", "data.min_len=20", "data.rollout_horizon=5"],
        encoder_overrides(TransformerEncoder),
    ],
    ids=["bilstm-classifier", "conv-bilstm-classifier", "lstm-fcn-classifier",
         "conv-both-bilstm-classifier", "forecaster",
         "transformer-classifier"],
)  # fmt: skip
def test_exported_model_equals_the_checkpoint(make_cfg, data: list[str]) -> None:
    """Each format (ONNX when onnx, onnxscript and onnxruntime are installed: the ``export``
    extra) on the batch export traced with, then on a larger one and a single sequence; any
    registered encoder (the Transformer: as it is, no swapped module) with B and T free."""
    cfg, ckpt = trained_checkpoint(make_cfg, *data)
    model = task_class(build_datamodule(cfg)).load_from_checkpoint(ckpt, map_location="cpu").eval()
    data_only = [o for o in data if o.startswith("data")]
    for fmt in FORMATS:
        export_cfg = make_cfg(
            *data_only, f"ckpt_path={ckpt}", f"format={fmt}", name="export", tiny=False
        )
        summary = export(export_cfg)
        assert summary["max_abs_diff"] <= TOLERANCE, fmt
        assert summary["free_sizes"] == ["batch", "steps"]
        assert summary["checked_other_batch"][:2] != summary["checked_batch"][:2]
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


def test_an_encoder_that_does_not_trace_is_refused_naming_why_and_leaves_nothing(
    make_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    """Exit 2 and one ``error:`` line: the encoder's class, the stage, the cause and the line of
    the encoder that branches; format=onnx goes through torch.export first, so fails there."""
    cfg, ckpt = trained_checkpoint(make_cfg, *encoder_overrides(BranchingEncoder))
    run_dir = Path(cfg.paths.output_dir)
    for fmt in FORMATS:
        caplog.clear()
        export_cfg = make_cfg(f"ckpt_path={ckpt}", f"format={fmt}", name="export", tiny=False)
        with pytest.raises(SystemExit) as stopped, caplog.at_level(logging.ERROR, "seqlab"):
            export_module.main(export_cfg)
        assert stopped.value.code == 2
        errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("error:")]
        assert len(errors) == 1, errors
        assert errors[0].startswith(
            "error: model.encoder: BranchingEncoder cannot be exported: torch.export failed with "
        )
        assert "data-dependent" in errors[0]
        assert errors[0].endswith("; nothing was written")
        assert "(at test_export.py:" in errors[0]
        assert not list(run_dir.glob("model*.pt2")) and not list(run_dir.glob("model*.onnx"))
        assert not (run_dir / "export.json").exists()


def test_an_encoder_that_fixes_the_steps_exports_with_them_fixed_saying_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    task = classifier(FixedStepsEncoder, steps=7)
    with caplog.at_level(logging.WARNING, "seqlab"):
        program, free = export_program(ExportableModel(task), padded_batch(steps=7))
    assert free == ("batch",)
    assert "FixedStepsEncoder does not export for any batch size and length" in caplog.text
    assert "exported with steps=7 fixed" in caplog.text
    x, lengths = padded_batch(batch=2, steps=7)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x, lengths), task(x, lengths))


@pytest.mark.skipif(not HAS_ONNX, reason="needs the export extra (onnx, onnxscript)")
def test_an_encoder_onnx_cannot_translate_is_refused_at_that_stage(tmp_path: Path) -> None:
    model = ExportableModel(classifier(CustomOpEncoder, steps=7))
    inputs = padded_batch(steps=7)
    program, _ = export_program(model, inputs)
    path = tmp_path / "model.onnx"
    with pytest.raises(UserError) as refused:
        export_onnx(model, program, inputs, path)
    message = str(refused.value)
    assert message.startswith("model.encoder: CustomOpEncoder cannot be exported: onnx failed")
    assert "seqlab_tests.twice" in message and "\n" not in message
    assert not path.exists()


def test_seqlab_lstms_inside_another_encoder_are_exported_masked() -> None:
    torch.manual_seed(0)
    task = classifier(WrappedLSTMEncoder)
    model = ExportableModel(task)
    assert isinstance(model.task.encoder.inner.lstm, MaskedLSTM)
    program, free = export_program(model, padded_batch())
    assert free == ("batch", "steps")
    x, lengths = padded_batch(batch=3, steps=11)
    with torch.no_grad():
        torch.testing.assert_close(
            program.module()(x, lengths), task(x, lengths), atol=TOLERANCE, rtol=0
        )


def test_unknown_format_is_refused(make_cfg) -> None:
    cfg = make_cfg("ckpt_path=x.ckpt", "format=tflite", name="export", tiny=False)
    with pytest.raises(ValueError, match="format='tflite': allowed: torch_export, onnx"):
        export(cfg)
