"""Export a trained model (encoder + head) with ``torch.export`` or to ONNX:
``python scripts/export.py ckpt_path=logs/.../last.ckpt format=torch_export|onnx``.

The exported model takes a padded batch ``x (B, T, D)`` and ``lengths (B,)`` (a language model:
``ids (B, T)``) and returns what the task's ``forward`` returns (logits, values or per-step
forecasts), for any B and T.

Any registered encoder is exported as it is, but for seqlab's LSTMs in it: each is swapped for
`seqlab.nn.MaskedLSTM`, the same function in traceable operations (the lengths a mask, the time
loop torch's ``scan``), so the exported program keeps T symbolic.

An encoder whose code fixes T (torch's RNNs, a layer over a fixed number of steps) is exported
with T, or B and T, fixed to the traced batch's, with a warning; one that ``torch.export``
cannot trace (Python branches on tensor values, lengths read on the host) is refused, naming
the encoder, the stage and the cause. Whatever was exported is checked against the checkpoint's
own forward on a test batch and, in the sizes left free, on a batch of other size and lengths.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import logging
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from seqlab.config_checks import check_config
from seqlab.errors import UserError, exit_on_user_error
from seqlab.nn import LSTM, MaskedLSTM
from seqlab.reporting import atomic_write, print_config_tree
from seqlab.tasks import SequenceTask
from seqlab.trained import load_trained

log = logging.getLogger(__name__)

FORMATS = ("torch_export", "onnx")
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")  # torch's exporters colour their messages
#: The sizes an exported model may leave free, by axis of its input.
SIZES = ((0, "batch"), (1, "steps"))
#: What export tries, in turn: both free, the batch size only (torch's RNNs fix the steps), none.
FREE_CHOICES: tuple[tuple[str, ...], ...] = (("batch", "steps"), ("batch",), ())


class ExportableModel(nn.Module):
    """A trained task module's forward, ``(x, lengths) -> output`` (a language model:
    ``ids -> logits``), with every seqlab `LSTM` in its encoder swapped for `MaskedLSTM` and the
    rest as trained. A copy: the task is untouched."""

    def __init__(self, task: SequenceTask) -> None:
        super().__init__()
        task = copy.deepcopy(task).eval()
        mask_lstms(task.encoder)
        self.task = task
        self.language_model = task.export_kind == "ids"  # ids in, logits out
        self.eval()

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.language_model:
            return self.task(x)[0]
        return self.task(x, lengths)

    def example_inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
        inputs = (batch["x"],) if self.language_model else (batch["x"], batch["lengths"])
        # A view's strides (a chunk of a longer stream) would tie the traced T to the stream's.
        return tuple(t.contiguous() for t in inputs)

    def dynamic_shapes(self, free: tuple[str, ...]) -> dict[str, Any]:
        """torch.export's ``dynamic_shapes``, the sizes named in ``free`` (of `SIZES`) left
        free and the others fixed to the traced batch's."""
        dims = {name: Dim(name, min=1) for name in free}
        shapes: dict[str, Any] = {"x": {axis: dims[name] for axis, name in SIZES if name in dims}}
        if not self.language_model:
            shapes["lengths"] = {0: dims["batch"]} if "batch" in dims else {}
        return shapes

    def refusal(self, stage: str, error: BaseException) -> UserError:
        """The one-line error for an encoder that ``stage`` (torch.export, onnx) cannot take:
        the class, the stage, the cause and the encoder's own line it came from."""
        encoder = type(self.task.encoder)
        return UserError(
            f"model.encoder: {encoder.__name__} cannot be exported: {stage} failed with "
            f"{first_line(error)}{line_in(encoder, error)}; nothing was written"
        )


def mask_lstms(module: nn.Module) -> None:
    """Swap each seqlab `LSTM` inside ``module`` for a `MaskedLSTM` on its parameters: those of
    seqlab's encoder, and of a fork's encoder built on them, trace then."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LSTM):
                setattr(parent, name, MaskedLSTM(child))


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and what it was raised from, outermost first."""
    chain = [error]
    while (cause := chain[-1].__cause__) is not None and cause not in chain:
        chain.append(cause)
    return chain


def first_line(error: BaseException) -> str:
    """``Type: first line`` of the innermost cause of ``error``: torch's exporters wrap the
    specific error (``No ONNX function found for ...``) in generic ones. Colours stripped."""
    root = causes(error)[-1]
    lines = [line.strip() for line in ANSI_CODE.sub("", str(root)).splitlines() if line.strip()]
    return type(root).__name__ + (f": {lines[0][:300]}" if lines else "")


def line_in(cls: type, error: BaseException) -> str:
    """`` (at file.py:N)``, the last line of ``cls``'s source file that ``error`` (or a cause)
    passed through: where a fork's encoder did what cannot be traced; empty if none."""
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:  # a class without a source file
        return ""
    found = ""
    for cause in causes(error):
        for frame, line in traceback.walk_tb(cause.__traceback__):
            if frame.f_code.co_filename == source:
                found = f" (at {Path(source).name}:{line})"
    return found


def export_program(
    model: ExportableModel, inputs: tuple[Tensor, ...]
) -> tuple[ExportedProgram, tuple[str, ...]]:
    """``torch.export`` of ``model`` and the sizes it leaves free: the batch size and the number
    of steps where the model allows, else (torch's RNNs, a layer over a fixed number of steps)
    fewer, saying so; one that does not trace even for the shapes of ``inputs`` is refused."""
    failures: list[Exception] = []
    for free in FREE_CHOICES:
        try:
            with torch.no_grad():
                program = torch.export.export(
                    model, inputs, dynamic_shapes=model.dynamic_shapes(free)
                )
        except Exception as error:  # any failure: a try with fewer free sizes tells if not shapes
            failures.append(error)
            continue
        if failures:
            fixed = [f"{name}={inputs[0].size(axis)}" for axis, name in SIZES if name not in free]
            log.warning(
                "model.encoder: %s does not export for any batch size and length (%s); "
                "exported with %s fixed",
                type(model.task.encoder).__name__,
                first_line(failures[0]),
                " and ".join(fixed),
            )
        return program, free
    raise model.refusal("torch.export", failures[-1]) from failures[-1]


def export_onnx(
    model: ExportableModel, program: ExportedProgram, inputs: tuple[Tensor, ...], path: Path
) -> Path:
    """ONNX of the ``torch.export`` program, through torch's exporter (needs the ``export``
    extra: onnx and onnxscript); an encoder it cannot translate is refused."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise RuntimeError(
            "format=onnx needs onnx and onnxscript: pip install 'seqlab[export]'"
        ) from error
    try:
        with torch.no_grad():
            onnx_program = torch.onnx.export(
                program,
                inputs,
                dynamo=True,
                input_names=["x", "lengths"][: len(inputs)],
                output_names=["output"],
                verbose=False,
            )
    except Exception as error:
        raise model.refusal("onnx", error) from error
    assert onnx_program is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(str(path))
    return path


def run_onnx(path: Path, inputs: tuple[Tensor, ...]) -> Tensor:
    """The ONNX model's output with onnxruntime (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    return torch.from_numpy(session.run(None, feeds)[0])


def load_exported(path: Path) -> Callable[..., Tensor] | None:
    """The model saved at ``path`` as a function of its inputs, to check it as it will be
    loaded (ONNX: with onnxruntime; None, saying so, where that is not installed)."""
    if path.suffix == ".pt2":
        return torch.export.load(path).module()
    if importlib.util.find_spec("onnxruntime") is None:
        log.warning("onnxruntime is not installed: the ONNX model was not checked")
        return None
    return lambda *inputs: run_onnx(path, inputs)


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def other_lengths(inputs: tuple[Tensor, ...], free: tuple[str, ...]) -> tuple[Tensor, ...]:
    """A batch unlike ``inputs`` in the sizes left ``free``: its first half of the rows, cut to
    half the steps (lengths clipped to them), so that a program that kept a traced size or
    value as a constant shows."""
    rows, steps = inputs[0].shape[:2]
    if "batch" in free:
        rows = (rows + 1) // 2
    if "steps" in free:
        steps = (steps + 1) // 2
    other = [inputs[0][:rows, :steps].contiguous()]
    if len(inputs) > 1:
        other.append(inputs[1][:rows].clamp(max=steps).contiguous())
    return tuple(other)


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` as ``model.pt2`` or ``model.onnx`` in the run folder, checked
    against the checkpoint's own forward on a batch of the test split (and, where its shapes
    are free, on one of other size and lengths); returns a summary (also ``export.json``)."""
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format!r}: allowed: {', '.join(FORMATS)}")
    datamodule, task = load_trained(cfg)
    batch = next(iter(datamodule.test_dataloader()))
    model = ExportableModel(task)
    inputs = model.example_inputs(batch)
    program, free = export_program(model, inputs)
    checks = [inputs, other_lengths(inputs, free)] if free else [inputs]
    with torch.no_grad():  # the checkpoint's own forward, fused or loop LSTM as trained
        expected = [task(*b)[0] if model.language_model else task(*b) for b in checks]

    out_dir = Path(cfg.paths.output_dir)
    path = out_dir / ("model.pt2" if cfg.format == "torch_export" else "model.onnx")
    # Written beside the target and renamed over it once checked: never a half-written or
    # wrong model under the final name.
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    try:
        if cfg.format == "torch_export":
            torch.export.save(program, partial)
        else:
            export_onnx(model, program, inputs, partial)
        run = load_exported(partial)
        diff = None if run is None else check_against_checkpoint(cfg, run, checks, expected)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    summary: dict[str, Any] = {
        "format": cfg.format,
        "path": str(path),
        "inputs": input_shapes(model, inputs, free),
        "free_sizes": list(free),
        "checked_batch": list(inputs[0].shape),
        "checked_other_batch": list(checks[1][0].shape) if free else None,
        "max_abs_diff": diff,
    }
    atomic_write(out_dir / "export.json", json.dumps(summary, indent=2) + "\n")
    log.info(
        "exported to %s; max |exported - checkpoint| on test batches: %s",
        path,
        summary["max_abs_diff"],
    )
    return summary


def check_against_checkpoint(
    cfg: DictConfig,
    run: Callable[..., Tensor],
    checks: list[tuple[Tensor, ...]],
    expected: list[Tensor],
) -> float:
    """The largest |exported - checkpoint| output difference over the ``checks`` batches;
    refused above ``cfg.tolerance`` or where the exported model fails on one."""
    diffs = []
    for i, (inputs, wanted) in enumerate(zip(checks, expected, strict=True)):
        which = "a test batch" if i == 0 else "a test batch of other size and lengths"
        try:
            with torch.no_grad():
                actual = run(*inputs)
        except Exception as error:
            raise UserError(
                f"ckpt_path={cfg.ckpt_path}: the exported model fails on {which} "
                f"{tuple(inputs[0].shape)} ({first_line(error)}); nothing was kept"
            ) from error
        diffs.append(max_abs_diff(actual, wanted))
        if not diffs[-1] <= cfg.tolerance:
            raise UserError(
                f"ckpt_path={cfg.ckpt_path}: the exported model's output differs from the "
                f"checkpoint's by up to {diffs[-1]:.3g} on {which} (tolerance={cfg.tolerance}); "
                "nothing was kept"
            )
    return max(diffs)


def input_shapes(
    model: ExportableModel, inputs: tuple[Tensor, ...], free: tuple[str, ...]
) -> list[str]:
    """What the exported model takes, for the summary: B and T where free, else their sizes."""
    batch = "B" if "batch" in free else str(inputs[0].size(0))
    steps = "T" if "steps" in free else str(inputs[0].size(1))
    if model.language_model:
        return [f"ids ({batch}, {steps}) int64"]
    return [f"x ({batch}, {steps}, D)", f"lengths ({batch},) int64"]


@exit_on_user_error
def main(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)
    print_config_tree(cfg, save_dir=cfg.paths.output_dir)
    summary = export(cfg)
    print(json.dumps(summary, indent=2))
    return summary
