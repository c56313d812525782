"""Export a trained model (encoder + head) with ``torch.export`` or to ONNX:
``python scripts/export.py ckpt_path=logs/.../last.ckpt format=torch_export|onnx``.

The exported model takes a padded batch ``x (B, T, D)`` and ``lengths (B,)`` (a language model:
``ids (B, T)``) and returns what the task's ``forward`` returns (logits, values or per-step
forecasts), for any B and T.

Neither of `seqlab.nn.LSTM`'s implementations traces as it is: the fused one packs the batch
(a PackedSequence's batch sizes are data, read on the host) and the loop one reads the lengths
on the host too, to sort the batch and shrink it as sequences end. `MaskedLSTM` computes the
same function with the lengths as a mask instead: every row steps through every time step, and
a step past a sequence's end keeps the state and outputs zeros; the reverse direction reads
each sequence reversed within its own length (a gather), so padding never reaches it either.
The time loop is torch's ``scan``, so the exported program keeps T symbolic.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from seqlab.config_checks import check_config
from seqlab.errors import UserError, exit_on_user_error
from seqlab.nn.lstm import LSTM, _reverse_index, reverse_time
from seqlab.tasks import LanguageModel, SequenceTask
from seqlab.utils.reporting import atomic_write, print_config_tree
from seqlab.utils.trained import load_trained

log = logging.getLogger(__name__)

FORMATS = ("torch_export", "onnx")
State = tuple[Tensor, Tensor]

try:  # torch >= 2.6; a private module, but what torch.export and ONNX turn into a loop op.
    from torch._higher_order_ops.scan import scan as _torch_scan
except ImportError:  # pragma: no cover - older torch: an unrolled loop (T fixed when exported)
    _torch_scan = None  # type: ignore[assignment]


def scan(
    step: Callable[[State, tuple[Tensor, Tensor]], tuple[State, Tensor]],
    init: State,
    xs: tuple[Tensor, Tensor],
) -> tuple[State, Tensor]:
    """``step(carry, x_t) -> (carry, y_t)`` over dim 0 of ``xs``; returns ``(carry, ys)``."""
    if _torch_scan is not None:
        return _torch_scan(step, init, xs)
    carry, ys = init, []
    for x_t in zip(*xs, strict=True):
        carry, y = step(carry, x_t)
        ys.append(y)
    return carry, torch.stack(ys)


class MaskedLSTM(nn.Module):
    """`seqlab.nn.LSTM`'s forward ``(input, hx, *, lengths) -> (output, (h_n, c_n))``, in
    traceable operations only (see the module docstring). Shares the LSTM's parameters.
    Inference only: no dropout between layers."""

    def __init__(self, lstm: LSTM) -> None:
        super().__init__()
        if getattr(lstm, "layer_norm", False):
            raise UserError(
                "model.encoder.layer_norm=true: export supports LSTMs without layer norm only"
            )
        self.lstm = lstm

    def forward(
        self, input: Tensor, hx: State | None = None, *, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        lstm = self.lstm
        x = input.transpose(0, 1) if lstm.batch_first else input  # (T, B, D)
        steps, batch = x.shape[0], x.shape[1]
        if hx is None:
            hx = lstm._zero_state(batch, x)
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device)
        real = (torch.arange(steps, device=x.device).unsqueeze(1) < lengths).unsqueeze(-1)
        reverse = _reverse_index(lengths, steps, x.device) if lstm.bidirectional else None
        suffixes = ("", "_reverse") if lstm.bidirectional else ("",)
        h_n, c_n = [], []
        layer_input = x
        for layer in range(lstm.num_layers):
            outputs = []
            for direction, suffix in enumerate(suffixes):
                k = layer * len(suffixes) + direction
                read = layer_input if direction == 0 else reverse_time(layer_input, reverse)
                output, (h, c) = self._direction(
                    read, real, (hx[0][k], hx[1][k]), f"l{layer}{suffix}"
                )
                outputs.append(output if direction == 0 else reverse_time(output, reverse))
                h_n.append(h)
                c_n.append(c)
            layer_input = torch.cat(outputs, dim=-1)
        output = layer_input.transpose(0, 1) if lstm.batch_first else layer_input
        return output, (torch.stack(h_n), torch.stack(c_n))

    def _direction(self, x: Tensor, real: Tensor, state: State, name: str) -> tuple[Tensor, State]:
        """(T, B, D) -> (T, B, Hp) outputs, zero past each sequence's end, and its final state."""
        lstm = self.lstm
        gates_x = x @ getattr(lstm, f"weight_ih_{name}").T
        if lstm.bias:
            gates_x = gates_x + getattr(lstm, f"bias_ih_{name}") + getattr(lstm, f"bias_hh_{name}")
        w_hh = getattr(lstm, f"weight_hh_{name}")
        w_hr = getattr(lstm, f"weight_hr_{name}") if lstm.proj_size else None

        def step(carry: State, inputs: tuple[Tensor, Tensor]) -> tuple[State, Tensor]:
            h, c = carry
            gates, keep = inputs
            i, f, g, o = (gates + h @ w_hh.T).chunk(4, dim=-1)
            c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_next = torch.sigmoid(o) * torch.tanh(c_next)
            if w_hr is not None:
                h_next = h_next @ w_hr.T
            h_next = torch.where(keep, h_next, h)
            c_next = torch.where(keep, c_next, c)
            return (h_next, c_next), torch.where(keep, h_next, torch.zeros_like(h_next))

        final, outputs = scan(step, state, (gates_x, real))
        return outputs, final


class ExportableModel(nn.Module):
    """A trained task module's forward, ``(x, lengths) -> output`` (a language model:
    ``ids -> logits``), with its LSTM swapped for `MaskedLSTM`. A copy: the task is untouched."""

    def __init__(self, task: SequenceTask) -> None:
        super().__init__()
        task = copy.deepcopy(task).eval()
        lstm = getattr(task.encoder, "lstm", None)
        if not isinstance(lstm, LSTM):
            raise UserError(
                f"model.encoder: export knows seqlab's LSTMEncoder only, got "
                f"{type(task.encoder).__name__}"
            )
        task.encoder.lstm = MaskedLSTM(lstm)
        self.task = task
        self.language_model = isinstance(task, LanguageModel)
        self.eval()

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.language_model:
            return self.task(x)[0]
        return self.task(x, lengths)

    def example_inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
        inputs = (batch["x"],) if self.language_model else (batch["x"], batch["lengths"])
        # A view's strides (a chunk of a longer stream) would tie the traced T to the stream's.
        return tuple(t.contiguous() for t in inputs)

    def dynamic_shapes(self) -> dict[str, Any]:
        batch, steps = Dim("batch", min=1), Dim("steps", min=1)
        shapes: dict[str, Any] = {"x": {0: batch, 1: steps}}
        if not self.language_model:
            shapes["lengths"] = {0: batch}
        return shapes


def export_program(model: ExportableModel, inputs: tuple[Tensor, ...]) -> ExportedProgram:
    """``torch.export`` of ``model`` with the batch size and the number of steps left free."""
    with torch.no_grad():
        return torch.export.export(model, inputs, dynamic_shapes=model.dynamic_shapes())


def export_onnx(model: ExportableModel, inputs: tuple[Tensor, ...], path: Path) -> Path:
    """ONNX through torch's exporter (needs the ``export`` extra: onnx and onnxscript)."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise RuntimeError(
            "format=onnx needs onnx and onnxscript: pip install 'seqlab[export]'"
        ) from error
    names = ["x", "lengths"][: len(inputs)]
    with torch.no_grad(), warnings.catch_warnings():
        # Our two inputs share the batch dimension, which the exporter remarks on.
        warnings.filterwarnings("ignore", "# The axis name: batch will not be used")
        program = torch.onnx.export(
            model,
            inputs,
            dynamo=True,
            input_names=names,
            output_names=["output"],
            dynamic_shapes=model.dynamic_shapes(),
            verbose=False,
        )
    assert program is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    return path


def run_onnx(path: Path, inputs: tuple[Tensor, ...]) -> Tensor:
    """The ONNX model's output with onnxruntime (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    return torch.from_numpy(session.run(None, feeds)[0])


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` as ``model.pt2`` or ``model.onnx`` in the run folder, checked
    against the checkpoint's own forward on a batch of the test split; returns a summary (also
    saved as ``export.json``)."""
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format!r}: allowed: {', '.join(FORMATS)}")
    datamodule, task = load_trained(cfg)
    batch = next(iter(datamodule.test_dataloader()))
    model = ExportableModel(task)
    inputs = model.example_inputs(batch)
    with torch.no_grad():  # the checkpoint's own forward, fused or loop LSTM as trained
        expected = task(*inputs)[0] if model.language_model else task(*inputs)

    out_dir = Path(cfg.paths.output_dir)
    path = out_dir / ("model.pt2" if cfg.format == "torch_export" else "model.onnx")
    # Written beside the target and renamed over it once checked: never a half-written or
    # wrong model under the final name.
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    try:
        if cfg.format == "torch_export":
            torch.export.save(export_program(model, inputs), partial)
            actual = torch.export.load(partial).module()(*inputs)
        else:
            export_onnx(model, inputs, partial)
            try:
                actual = run_onnx(partial, inputs)
            except ImportError:
                log.warning("onnxruntime is not installed: the ONNX model was not checked")
                actual = None
        diff = None if actual is None else max_abs_diff(actual, expected)
        if diff is not None and not diff <= cfg.tolerance:
            raise UserError(
                f"ckpt_path={cfg.ckpt_path}: the exported model's output differs from the "
                f"checkpoint's by up to {diff:.3g} on a test batch (tolerance={cfg.tolerance}); "
                "nothing was kept"
            )
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    summary: dict[str, Any] = {
        "format": cfg.format,
        "path": str(path),
        "inputs": ["ids (B, T) int64"]
        if model.language_model
        else ["x (B, T, D)", "lengths (B,) int64"],
        "checked_batch": list(inputs[0].shape),
        "max_abs_diff": diff,
    }
    atomic_write(out_dir / "export.json", json.dumps(summary, indent=2) + "\n")
    log.info(
        "exported to %s; max |exported - checkpoint| on a test batch: %s",
        path,
        summary["max_abs_diff"],
    )
    return summary


@exit_on_user_error
def main(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)
    print_config_tree(cfg, save_dir=cfg.paths.output_dir)
    summary = export(cfg)
    print(json.dumps(summary, indent=2))
    return summary
