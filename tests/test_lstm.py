"""seqlab.nn.LSTM: both implementations against torch.nn.LSTM, padding, options and errors."""

from __future__ import annotations

import contextlib
import inspect

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqlab.nn import LSTM, recurrence
from seqlab.nn.lstm import LOOP_ONLY_OPTIONS
from seqlab.nn.masking import as_lengths, lengths_on

ATOL = RTOL = 1e-5
# float32 weight gradients are sums over T * B terms that can cancel, so their rounding depends
# on the summation order, which differs between torch's kernels and ours. On this project's
# machines (AMD EPYC, oneDNN) 720 drawn cases (hypothesis seeds 1-12) all agree to 1e-5; on an
# Intel Xeon host single entries were once seen 1.8e-5 apart. Raise this there if it trips.
FLOAT32_GRAD_ATOL = 1e-5


@contextlib.contextmanager
def packed_weights(enabled: bool):
    """Run the loop with or without oneDNN-prepacked recurrent weights (both paths are real)."""
    previous = recurrence.PACK_WEIGHTS
    recurrence.PACK_WEIGHTS = enabled
    try:
        yield
    finally:
        recurrence.PACK_WEIGHTS = previous


def twins(dtype: torch.dtype = torch.float32, **kwargs) -> tuple[nn.LSTM, LSTM, LSTM]:
    """torch.nn.LSTM and seqlab's fused and loop LSTMs, all with the same weights."""
    reference = nn.LSTM(**kwargs).to(dtype)
    fused = LSTM(**kwargs, impl="fused").to(dtype)
    loop = LSTM(**kwargs, impl="loop").to(dtype)
    fused.load_state_dict(reference.state_dict())
    loop.load_state_dict(reference.state_dict())
    return reference, fused, loop


def pad_with_garbage(x: Tensor, lengths: Tensor, batch_first: bool) -> Tensor:
    """Overwrite every padded step with large values, which would show if padding leaked."""
    x = x.clone()
    for b, length in enumerate(lengths.tolist()):
        if batch_first:
            x[b, length:] = 1e3
        else:
            x[length:, b] = 1e3
    return x


def run(model: nn.Module, x, hx, lengths):
    """Forward pass; for torch.nn.LSTM, `lengths` goes through pack_padded_sequence."""
    if lengths is None or isinstance(model, LSTM):
        kwargs = {} if lengths is None else {"lengths": lengths}
        return model(x, hx, **kwargs)
    packed = pack_padded_sequence(x, lengths, batch_first=model.batch_first, enforce_sorted=False)
    output, state = model(packed, hx)
    time_dim = 1 if model.batch_first else 0
    output, _ = pad_packed_sequence(output, model.batch_first, total_length=x.size(time_dim))
    return output, state


def outputs_and_grads(model: nn.Module, x, hx, lengths, weights: list[Tensor]):
    """Output, h_n, c_n and the gradients of every parameter, the input and hx."""
    model.zero_grad()
    output, (h_n, c_n) = run(model, x, hx, lengths)
    data = output.data if isinstance(output, PackedSequence) else output
    loss = (data * weights[0][: data.numel()].view_as(data)).sum()
    loss = loss + (h_n * weights[1][: h_n.numel()].view_as(h_n)).sum()
    loss = loss + (c_n * weights[2][: c_n.numel()].view_as(c_n)).sum()
    inputs = [x.data if isinstance(x, PackedSequence) else x, *(hx or ())]
    grads = torch.autograd.grad(loss, [*model.parameters(), *inputs])
    return [data, h_n, c_n, *grads]


@st.composite
def lstm_cases(draw):
    num_layers = draw(st.integers(1, 3))
    hidden_size = draw(st.integers(2, 5))
    case = {
        "module": {
            "input_size": draw(st.integers(1, 4)),
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "bias": draw(st.booleans()),
            "batch_first": draw(st.booleans()),
            "bidirectional": draw(st.booleans()),
            "proj_size": draw(st.sampled_from([0, 0, hidden_size - 1])),
        },
        "steps": draw(st.integers(1, 5)),
        "batch": draw(st.integers(1, 4)),
        "with_hx": draw(st.booleans()),
        "input_kind": draw(st.sampled_from(["full", "padded", "packed", "unbatched"])),
        "pack_weights": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "seed": draw(st.integers(0, 2**16)),
    }
    return case


@settings(max_examples=60, deadline=None)
@given(case=lstm_cases())
def test_loop_and_fused_match_torch_outputs_and_gradients(case):
    torch.manual_seed(case["seed"])
    kwargs, dtype = case["module"], case["dtype"]
    reference, fused, loop = twins(dtype, **kwargs)
    steps, batch, batch_first = case["steps"], case["batch"], kwargs["batch_first"]
    dirs = 2 if kwargs["bidirectional"] else 1
    state_size = kwargs["proj_size"] or kwargs["hidden_size"]
    x = torch.randn(
        (batch, steps, kwargs["input_size"])
        if batch_first
        else (steps, batch, kwargs["input_size"]),
        dtype=dtype,
    )
    lengths = None
    if case["input_kind"] in ("padded", "packed"):
        lengths = torch.randint(1, steps + 1, (batch,))
        x = pad_with_garbage(x, lengths, batch_first)
    hx = None
    if case["with_hx"]:
        hx = (
            torch.randn(kwargs["num_layers"] * dirs, batch, state_size, dtype=dtype),
            torch.randn(kwargs["num_layers"] * dirs, batch, kwargs["hidden_size"], dtype=dtype),
        )
    if case["input_kind"] == "unbatched":
        x = x[0] if batch_first else x[:, 0]
        hx = None if hx is None else (hx[0][:, 0], hx[1][:, 0])
    x.requires_grad_(True)
    if hx is not None:
        hx = (hx[0].requires_grad_(True), hx[1].requires_grad_(True))
    if case["input_kind"] == "packed":
        x = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        lengths = None

    weights = [torch.randn(10_000, dtype=dtype) for _ in range(3)]
    expected = outputs_and_grads(reference, x, hx, lengths, weights)
    grad_atol = FLOAT32_GRAD_ATOL if dtype == torch.float32 else ATOL
    with packed_weights(case["pack_weights"]):
        for model in (fused, loop):
            actual = outputs_and_grads(model, x, hx, lengths, weights)
            for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
                atol = ATOL if index < 3 else grad_atol  # output, h_n, c_n, then gradients
                torch.testing.assert_close(got, want, atol=atol, rtol=RTOL)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("bidirectional", "num_layers"), [(False, 1), (False, 2), (True, 2)])
def test_fused_runs_of_equal_length_match_torch_packed(
    monkeypatch, bidirectional, num_layers, batch_first, with_hx, bias
):
    """On the CPU a padded batch with few distinct lengths runs the oneDNN kernel once per
    distinct length (`_fused_runs`), not packed: same outputs, states and gradients as
    torch.nn.LSTM on the packed batch, garbage padding included."""
    calls = []
    runs = LSTM._fused_runs
    monkeypatch.setattr(LSTM, "_fused_runs", lambda *a: calls.append(1) or runs(*a))
    torch.manual_seed(0)
    kwargs = {
        "input_size": 3,
        "hidden_size": 4,
        "num_layers": num_layers,
        "bias": bias,
        "batch_first": batch_first,
        "bidirectional": bidirectional,
    }
    reference, fused, _ = twins(**kwargs)
    steps, lengths = 12, torch.tensor([12, 5, 3, 5, 12, 3])  # 3 runs: 0-3, 3-5, 5-12
    shape = (6, steps, 3) if batch_first else (steps, 6, 3)
    x = pad_with_garbage(torch.randn(shape), lengths, batch_first).requires_grad_(True)
    hx = None
    if with_hx:
        layers = num_layers * (2 if bidirectional else 1)
        hx = (torch.randn(layers, 6, 4).requires_grad_(True), torch.randn(layers, 6, 4))
        hx[1].requires_grad_(True)
    weights = [torch.randn(10_000) for _ in range(3)]
    expected = outputs_and_grads(reference, x, hx, lengths, weights)
    actual = outputs_and_grads(fused, x, hx, lengths, weights)
    assert calls, "the padded batch did not take the runs path"
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    ("dtype", "lengths", "proj_size", "expected"),
    [
        (torch.float32, [8, 8, 2, 2], 0, True),  # 2 distinct lengths over 8 steps
        (torch.float32, [8, 7, 6, 5, 4, 3], 0, False),  # one run a step or so: packing is faster
        (torch.float64, [8, 8, 2, 2], 0, False),  # torch's kernel is not oneDNN's
        (torch.float32, [8, 8, 2, 2], 2, False),  # nor with projections
    ],
)
def test_fused_runs_only_where_they_pay(dtype, lengths, proj_size, expected):
    model = LSTM(3, 4, proj_size=proj_size, impl="fused").to(dtype)
    x = torch.zeros(8, len(lengths), 3, dtype=dtype)
    assert (model._run_ends(x, torch.tensor(lengths)) is not None) is expected


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_padded_batch_runs_under_cpu_bf16_autocast(bidirectional):
    """oneDNN refuses bf16 LSTMs on CPUs without bf16 support: under autocast the batch is
    packed (the runs would fail there), as `trainer.precision=bf16-mixed` on a CPU needs."""
    model = LSTM(3, 4, 2, batch_first=True, bidirectional=bidirectional, impl="fused")
    x, lengths = torch.randn(4, 10, 3, requires_grad=True), torch.tensor([10, 10, 3, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model._run_ends(x, lengths) is None
        output, (h_n, _) = model(x, lengths=lengths)
    (output.float().sum() + h_n.float().sum()).backward()
    assert output.shape == (4, 10, 4 * (2 if bidirectional else 1))
    assert torch.equal(output[2:, 3:], torch.zeros_like(output[2:, 3:]))


def test_fused_runs_drop_out_between_layers_only_in_training():
    torch.manual_seed(0)
    model = LSTM(3, 5, 2, dropout=0.5, impl="fused")
    x, lengths = torch.randn(10, 4, 3), torch.tensor([10, 10, 4, 4])
    assert model._run_ends(x, lengths) is not None
    model.eval()
    first, second = model(x, lengths=lengths)[0], model(x, lengths=lengths)[0]
    assert torch.equal(first, second)
    model.train()
    torch.manual_seed(1)
    first = model(x, lengths=lengths)[0]
    torch.manual_seed(2)
    second = model(x, lengths=lengths)[0]
    assert not torch.equal(first, second)
    assert torch.equal(first[4:, 2:], torch.zeros_like(first[4:, 2:]))  # padding stays zero


def test_packed_output_keeps_torch_sorting_metadata():
    reference, fused, loop = twins(input_size=3, hidden_size=4, bidirectional=True)
    x = torch.randn(5, 3, 3)
    for enforce_sorted, lengths in ((False, [2, 5, 3]), (True, [5, 3, 2])):
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
        expected, _ = reference(packed)
        for model in (fused, loop):
            output, _ = model(packed)
            assert isinstance(output, PackedSequence)
            assert torch.equal(output.batch_sizes, expected.batch_sizes)
            for got, want in (
                (output.sorted_indices, expected.sorted_indices),
                (output.unsorted_indices, expected.unsorted_indices),
            ):
                assert (got is None and want is None) or torch.equal(got, want)
            torch.testing.assert_close(output.data, expected.data)


@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_reaches_reverse_direction(impl, bidirectional):
    """Each sequence of a padded batch gives exactly what it gives alone, in both directions."""
    torch.manual_seed(0)
    model = LSTM(3, 5, 2, batch_first=True, bidirectional=bidirectional, impl=impl).double()
    lengths = torch.tensor([4, 7, 1, 3])
    x = pad_with_garbage(torch.randn(4, 7, 3, dtype=torch.double), lengths, batch_first=True)
    output, (h_n, c_n) = model(x, lengths=lengths)
    for b, length in enumerate(lengths.tolist()):
        alone, (h_alone, c_alone) = model(x[b : b + 1, :length])
        torch.testing.assert_close(output[b : b + 1, :length], alone, atol=1e-12, rtol=0)
        torch.testing.assert_close(h_n[:, b : b + 1], h_alone, atol=1e-12, rtol=0)
        torch.testing.assert_close(c_n[:, b : b + 1], c_alone, atol=1e-12, rtol=0)


@pytest.mark.parametrize("proj_size", [0, 2])
def test_inference_without_grad_gives_the_training_forward_results(proj_size):
    """Under no_grad the loop keeps only the current cell state; results must not change."""
    torch.manual_seed(0)
    model = LSTM(3, 4, 2, bidirectional=True, proj_size=proj_size, impl="loop")
    x, lengths = torch.randn(6, 3, 3), [6, 2, 4]
    expected = model(x, lengths=lengths)
    with torch.no_grad():
        actual = model(x, lengths=lengths)
    torch.testing.assert_close(actual[0], expected[0])
    torch.testing.assert_close(actual[1], expected[1])


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_padded_steps_output_exact_zeros_and_take_no_gradient(impl):
    torch.manual_seed(0)
    model = LSTM(3, 4, 2, bidirectional=True, impl=impl)
    lengths = [2, 5, 3]
    x = torch.randn(5, 3, 3, requires_grad=True)
    output, _ = model(x, lengths=lengths)
    output.sum().backward()
    for b, length in enumerate(lengths):
        assert torch.all(output[length:, b] == 0)
        assert torch.all(x.grad[length:, b] == 0)


@pytest.mark.parametrize(
    ("impl", "kwargs"),
    [
        *[(impl, {}) for impl in ("fused", "loop")],
        *[(impl, {"bidirectional": True, "num_layers": 2}) for impl in ("fused", "loop")],
        *[(impl, {"proj_size": 2}) for impl in ("fused", "loop")],
        ("loop", {"layer_norm": True}),  # loop only
    ],
    ids=["plain-fused", "plain-loop", "bi-fused", "bi-loop", "proj-fused", "proj-loop", "ln-loop"],
)
@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
def test_non_finite_padding_changes_no_output_and_no_gradient(impl, kwargs, fill):
    """Packing never reads padded steps; the loop must not either, not even through the
    weight gradients, where padded rows are multiplied by zero gate gradients."""
    torch.manual_seed(0)
    model = LSTM(3, 4, batch_first=True, impl=impl, **kwargs).double()
    lengths = torch.tensor([5, 2, 4])
    clean = torch.randn(3, 5, 3, dtype=torch.double)
    for b, length in enumerate(lengths.tolist()):
        clean[b, length:] = 0

    def run(x: Tensor) -> tuple[Tensor, ...]:
        model.zero_grad()
        output, (h_n, c_n) = model(x, lengths=lengths)
        (output.sum() + h_n.sum() + c_n.sum()).backward()
        grads = [param.grad.clone() for param in model.parameters()]
        return output.detach(), h_n.detach(), c_n.detach(), *grads

    dirty = clean.clone()
    for b, length in enumerate(lengths.tolist()):
        dirty[b, length:] = fill
    for got, want in zip(run(dirty), run(clean), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("kwargs", [{}, {"bidirectional": True, "num_layers": 2, "proj_size": 2}])
def test_an_empty_batch_gives_torchs_empty_shapes(impl, kwargs):
    torch.manual_seed(0)
    model = LSTM(3, 4, impl=impl, **kwargs)
    reference = nn.LSTM(3, 4, **kwargs)
    x = torch.randn(5, 0, 3, requires_grad=True)
    output, (h_n, c_n) = model(x)
    want, (want_h, want_c) = reference(x)
    assert (output.shape, h_n.shape, c_n.shape) == (want.shape, want_h.shape, want_c.shape)
    (output.sum() + h_n.sum() + c_n.sum()).backward()
    assert x.grad.shape == x.shape


def test_lengths_accept_lists_and_tensors_on_any_device_and_dtype():
    torch.manual_seed(0)
    model = LSTM(2, 3, impl="loop")
    x = torch.randn(4, 2, 2)
    expected, _ = model(x, lengths=[3, 4])
    for lengths in (torch.tensor([3, 4]), torch.tensor([3, 4], dtype=torch.int32), (3, 4)):
        output, _ = model(x, lengths=lengths)
        torch.testing.assert_close(output, expected)


def test_lengths_on_the_cpu_stay_where_they_are():
    lengths = torch.tensor([3, 4])
    assert as_lengths(lengths, 2, 4).data_ptr() == lengths.data_ptr()  # no copy
    assert lengths_on(lengths, torch.device("cpu")) is lengths
    copied = lengths_on((3, 4), torch.device("meta"))
    assert (copied.device.type, copied.dtype, copied.shape) == ("meta", torch.int64, (2,))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_padded_forward_and_backward_read_nothing_back_from_the_device(
    impl, bidirectional, batch_first
):
    """On the data-less meta device, which stands in for an accelerator: reading a value back
    from it raises (see tests/test_encoder.py). The lengths are on the CPU."""
    model = LSTM(3, 4, 2, batch_first=batch_first, bidirectional=bidirectional, impl=impl)
    model = model.to("meta")
    x = torch.randn((3, 5, 3) if batch_first else (5, 3, 3), device="meta", requires_grad=True)
    output, (h_n, c_n) = model(x, lengths=torch.tensor([5, 2, 4]))
    (output.sum() + h_n.sum() + c_n.sum()).backward()
    assert output.device.type == x.grad.device.type == "meta"


@pytest.mark.parametrize(
    ("kwargs", "extra"),
    [
        ({}, {}),
        ({"bidirectional": True, "num_layers": 2}, {}),
        ({"proj_size": 2, "bidirectional": True}, {}),
        ({"bias": False}, {}),
        ({"bidirectional": True}, {"orthogonal_init": True}),
    ],
)
def test_state_dicts_load_both_ways_between_loop_fused_and_torch(kwargs, extra):
    torch.manual_seed(0)
    kwargs = {"input_size": 3, "hidden_size": 4, **kwargs}
    models = [
        nn.LSTM(**kwargs),
        LSTM(**kwargs, impl="fused", **extra),
        LSTM(**kwargs, impl="loop", **extra),
    ]
    x = torch.randn(5, 2, 3)
    for source in models:
        expected, _ = source(x)
        for target in models:
            clone = type(target)(**kwargs)
            clone.load_state_dict(source.state_dict())
            output, _ = clone(x)
            torch.testing.assert_close(output, expected, atol=ATOL, rtol=RTOL)


def test_same_seed_gives_the_same_weights_as_torch():
    torch.manual_seed(3)
    expected = nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2).state_dict()
    torch.manual_seed(3)
    actual = LSTM(3, 4, 2, bidirectional=True, proj_size=2, impl="loop").state_dict()
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_loop_gradients_pass_gradcheck_in_float64():
    """The hand-written backward against finite differences, with every optional input used."""
    torch.manual_seed(0)
    dirs, steps, batch, features, hidden, proj = 2, 4, 3, 2, 3, 2
    x = torch.randn(dirs, steps, batch, features, dtype=torch.double, requires_grad=True)
    w_ih = torch.randn(dirs, 4 * hidden, features, dtype=torch.double, requires_grad=True)
    bias = torch.randn(dirs, 4 * hidden, dtype=torch.double, requires_grad=True)
    w_hh = torch.randn(dirs, 4 * hidden, proj, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(dirs, batch, proj, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(dirs, batch, hidden, dtype=torch.double, requires_grad=True)
    w_hr = torch.randn(dirs, proj, hidden, dtype=torch.double, requires_grad=True)
    mask = torch.rand(dirs, batch, proj, dtype=torch.double) * 2

    def layer(x, w_ih, bias, w_hh, h0, c0, w_hr):
        return recurrence.lstm_layer(
            x, w_ih, bias, w_hh, h0, c0, w_hr=w_hr, recurrent_mask=mask, batch_sizes=[3, 3, 2, 1]
        )

    assert torch.autograd.gradcheck(layer, (x, w_ih, bias, w_hh, h0, c0, w_hr))


@pytest.mark.parametrize("proj_size", [0, 2])
@pytest.mark.parametrize("pack_weights", [True, False])
def test_loop_backward_runs_twice_with_retain_graph(pack_weights, proj_size):
    """A single backward reuses the saved gate activations as gradient buffers; a kept graph
    must not be harmed by that: two backwards give twice torch's gradients."""
    torch.manual_seed(0)
    kwargs = dict(
        input_size=3, hidden_size=4, num_layers=2, bidirectional=True, proj_size=proj_size
    )
    reference, _, loop = twins(**kwargs)
    x = torch.randn(5, 3, 3)
    lengths = torch.tensor([5, 2, 4])
    with packed_weights(pack_weights):
        output, _ = loop(x, lengths=lengths)
        loss = output.pow(2).sum()
        loss.backward(retain_graph=True)
        loss.backward()
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    expected, _ = pad_packed_sequence(reference(packed)[0])
    expected.pow(2).sum().mul(2).backward()
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(
            getattr(loop, name).grad, parameter.grad, atol=FLOAT32_GRAD_ATOL, rtol=RTOL
        )


@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gpu_branch_of_the_loop_matches_torch_on_cpu(monkeypatch, bidirectional, proj_size):
    """The batched-matmul path the loop takes on a GPU (all directions in one group, bmm per
    step), run on CPU so that CI, which has no GPU, checks it against torch.nn.LSTM."""
    make = recurrence._BatchedLinear.__init__

    def as_if_on_gpu(self, *args, **kwargs):
        make(self, *args, **kwargs)
        self.on_cpu = self.use_onednn = False

    monkeypatch.setattr(recurrence._BatchedLinear, "__init__", as_if_on_gpu)
    torch.manual_seed(0)
    kwargs = dict(input_size=5, hidden_size=6, num_layers=2, bidirectional=bidirectional)
    reference, _, loop = twins(**kwargs, proj_size=proj_size)
    x = torch.randn(7, 4, 5, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1])
    weights = [torch.randn(10_000) for _ in range(3)]
    expected = outputs_and_grads(reference, x, None, lengths, weights)
    actual = outputs_and_grads(loop, x, None, lengths, weights)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, atol=FLOAT32_GRAD_ATOL, rtol=RTOL)


def test_auto_picks_fused_unless_a_loop_only_option_is_set():
    assert LSTM(2, 3).impl == "fused"
    assert LSTM(2, 3, orthogonal_init=True).impl == "fused"
    assert LSTM(2, 3, layer_norm=True).impl == "loop"
    assert LSTM(2, 3, recurrent_dropout=0.2).impl == "loop"
    assert LSTM(2, 3, forget_bias=1.0).impl == "loop"


def test_forget_bias_sets_the_forget_gate_sum_of_both_biases():
    model = LSTM(2, 3, 2, bidirectional=True, forget_bias=1.0)
    for name in ("l0", "l1_reverse"):
        b_ih, b_hh = getattr(model, f"bias_ih_{name}"), getattr(model, f"bias_hh_{name}")
        torch.testing.assert_close(b_ih[3:6] + b_hh[3:6], torch.ones(3))
    model.reset_parameters()
    torch.testing.assert_close(model.bias_ih_l0[3:6], torch.ones(3))


def test_orthogonal_init_makes_every_recurrent_gate_block_orthogonal():
    model = LSTM(2, 4, bidirectional=True, orthogonal_init=True, impl="fused")
    for block in model.weight_hh_l0_reverse.detach().chunk(4):
        torch.testing.assert_close(block @ block.T, torch.eye(4), atol=1e-5, rtol=0)


def test_recurrent_dropout_only_acts_in_training():
    torch.manual_seed(0)
    plain = LSTM(3, 4, impl="loop")
    dropped = LSTM(3, 4, impl="loop", recurrent_dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(6, 2, 3)
    dropped.eval()
    torch.testing.assert_close(dropped(x)[0], plain(x)[0])
    dropped.train()
    first, second = dropped(x)[0], dropped(x)[0]
    assert not torch.allclose(first, plain(x)[0])
    assert not torch.allclose(first, second)
    # The first step sees only h0 = 0, so the mask cannot change it yet.
    torch.testing.assert_close(first[0], plain(x)[0][0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_between_layers_only_in_training_and_never_after_the_last(bidirectional):
    torch.manual_seed(0)
    x = torch.randn(5, 2, 3)
    single = LSTM(3, 4, impl="loop")
    with pytest.warns(UserWarning, match="dropout"):
        single_dropped = LSTM(3, 4, impl="loop", dropout=0.9)
    single_dropped.load_state_dict(single.state_dict())
    torch.testing.assert_close(single_dropped.train()(x)[0], single(x)[0])

    stacked = LSTM(3, 4, 2, impl="loop", dropout=0.9, bidirectional=bidirectional)
    reference = nn.LSTM(3, 4, 2, dropout=0.9, bidirectional=bidirectional)
    reference.load_state_dict(stacked.state_dict())
    torch.testing.assert_close(stacked.eval()(x)[0], reference.eval()(x)[0], atol=ATOL, rtol=RTOL)
    assert not torch.allclose(stacked.train()(x)[0], reference.eval()(x)[0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_norm_lstm_ignores_padding_and_trains_its_norms(bidirectional):
    torch.manual_seed(0)
    model = LSTM(3, 4, 2, batch_first=True, bidirectional=bidirectional, layer_norm=True).double()
    assert "layer_norm_cell_l1.weight" in model.state_dict()
    lengths = torch.tensor([5, 2, 4])
    x = pad_with_garbage(torch.randn(3, 5, 3, dtype=torch.double), lengths, batch_first=True)
    output, (h_n, _) = model(x, lengths=lengths)
    for b, length in enumerate(lengths.tolist()):
        alone, (h_alone, _) = model(x[b : b + 1, :length])
        torch.testing.assert_close(output[b : b + 1, :length], alone)
        torch.testing.assert_close(h_n[:, b : b + 1], h_alone)
        assert torch.all(output[b, length:] == 0)
    output.sum().backward()
    assert model.layer_norm_hh_l0.weight.grad.abs().sum() > 0


def test_loop_runs_under_cpu_bf16_autocast():
    model = LSTM(3, 4, 2, bidirectional=True, impl="loop")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, (h_n, c_n) = model(torch.randn(5, 2, 3), lengths=[5, 3])
    assert output.shape == (5, 2, 8)
    assert all(torch.isfinite(t.float()).all() for t in (output, h_n, c_n))


def test_extra_repr_names_impl_and_options():
    text = repr(LSTM(2, 3, impl="loop", recurrent_dropout=0.1, orthogonal_init=True))
    assert (
        "impl='loop'" in text and "recurrent_dropout=0.1" in text and "orthogonal_init=True" in text
    )


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        ([3, 0], "must be >= 1"),
        ([3, 6], "exceeds the padded time dimension"),
        ([3, 2, 1], "has 3 entries but the batch holds 2"),
        (torch.tensor([[3, 2]]), "must be 1-D"),
        (torch.tensor([3.0, 2.0]), "must hold integers"),
    ],
)
def test_bad_lengths_raise_a_clear_error(impl, lengths, message):
    model = LSTM(2, 3, impl=impl)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(5, 2, 2), lengths=lengths)


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_lengths_with_packed_or_unbatched_input_is_rejected(impl):
    model = LSTM(2, 3, impl=impl)
    packed = pack_padded_sequence(torch.randn(4, 2, 2), [4, 2])
    with pytest.raises(ValueError, match="PackedSequence"):
        model(packed, lengths=[4, 2])
    with pytest.raises(ValueError, match="batched 3-D input"):
        model(torch.randn(4, 2), lengths=[4])


@pytest.mark.parametrize(
    ("option", "name"),
    [
        ({"layer_norm": True}, "layer_norm"),
        ({"recurrent_dropout": 0.1}, "recurrent_dropout"),
        ({"forget_bias": 1.0}, "forget_bias"),
    ],
)
def test_loop_only_option_with_fused_names_the_option_and_the_fix(option, name):
    with pytest.raises(ValueError, match=rf"{name}.*impl=\"loop\""):
        LSTM(2, 3, impl="fused", **option)


@pytest.mark.parametrize("key", sorted(LOOP_ONLY_OPTIONS))
def test_each_loop_only_option_is_an_lstm_keyword_off_by_default_and_picks_the_loop(key):
    """The table the config checks read agrees with LSTM: the key is a keyword whose default is
    the table's off value, and setting it makes impl="auto" the loop and impl="fused" fail."""
    off = LOOP_ONLY_OPTIONS[key]
    assert inspect.signature(LSTM).parameters[key].default == off
    on = {"layer_norm": True, "recurrent_dropout": 0.1, "forget_bias": 1.0}[
        key
    ]  # a new one: add it
    assert LSTM(2, 3, **{key: on}).impl == "loop"
    assert LSTM(2, 3).impl == "fused"
    with pytest.raises(ValueError, match=key):
        LSTM(2, 3, impl="fused", **{key: on})


def test_bad_impl_name_lists_the_allowed_values():
    with pytest.raises(ValueError, match="'auto', 'fused', 'loop'"):
        LSTM(2, 3, impl="cudnn")


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="recurrent_dropout"):
        LSTM(2, 3, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match="bias=True"):
        LSTM(2, 3, bias=False, forget_bias=1.0)


def test_wrong_hidden_state_shape_fails_like_torch():
    model = LSTM(2, 3, impl="loop")
    bad = (torch.zeros(1, 5, 3), torch.zeros(1, 5, 3))
    with pytest.raises(RuntimeError, match="Expected hidden"):
        model(torch.randn(4, 2, 2), bad)
    with pytest.raises(RuntimeError, match="Expected hidden"):
        model(torch.randn(4, 2, 2), bad, lengths=[4, 2])


@pytest.mark.slow
def test_loop_gives_the_same_results_under_torch_compile():
    """torch.compile is opt-in (it unrolls the time loop, so compiling takes a while)."""
    torch.manual_seed(0)
    model = LSTM(3, 4, 2, batch_first=True, bidirectional=True, impl="loop")
    x = torch.randn(2, 5, 3)
    expected, _ = model(x, lengths=[5, 3])
    compiled = torch.compile(model)
    output, _ = compiled(x, lengths=[5, 3])
    torch.testing.assert_close(output, expected)
    output.sum().backward()
    assert model.weight_hh_l1_reverse.grad is not None


def test_loop_projection_gradients_stay_finite_on_padded_batches(monkeypatch):
    # The projection's weight gradient reads tanh(c) at padded rows too; those rows must be
    # zeroed, never left as uninitialised memory. Fill "uninitialised" buffers with NaN so the
    # test does not depend on what the allocator happens to hand back.
    empty_like = torch.empty_like
    monkeypatch.setattr(
        torch, "empty_like", lambda t, **kw: empty_like(t, **kw).fill_(float("nan"))
    )
    torch.manual_seed(1)
    lstm = LSTM(2, 4, num_layers=2, proj_size=3, impl="loop")
    x = torch.randn(4, 4, 2, requires_grad=True)
    output, (h_n, c_n) = lstm(x, lengths=torch.tensor([4, 1, 3, 2]))
    (output.sum() + h_n.sum() + c_n.sum()).backward()
    for name, param in lstm.named_parameters():
        assert torch.isfinite(param.grad).all(), name
