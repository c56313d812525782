"""seqlab.nn on CUDA: loop against fused (cuDNN), padded batches, autocast. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqlab.data.collate import pad_collate
from seqlab.nn import LSTM, LSTMEncoder
from seqlab.tasks.classification import SequenceClassifier

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def exact_float32():
    """cuDNN and cuBLAS may use TF32 for float32; the comparisons below want full precision."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def cuda_twins(**kwargs) -> tuple[LSTM, LSTM]:
    fused = LSTM(**kwargs, impl="fused").cuda()
    loop = LSTM(**kwargs, impl="loop").cuda()
    loop.load_state_dict(fused.state_dict())
    return fused, loop


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("proj_size", [0, 8])
@pytest.mark.parametrize("padded", [False, True])
def test_loop_matches_cudnn_outputs_and_gradients(bidirectional, proj_size, padded):
    torch.manual_seed(0)
    fused, loop = cuda_twins(
        input_size=12,
        hidden_size=16,
        num_layers=2,
        batch_first=True,
        bidirectional=bidirectional,
        proj_size=proj_size,
    )
    x = torch.randn(5, 9, 12, device="cuda", requires_grad=True)
    lengths = torch.tensor([9, 3, 7, 1, 5]) if padded else None  # on the CPU, as usual
    results = []
    for model in (fused, loop):
        model.zero_grad()
        output, (h_n, c_n) = model(x, lengths=lengths)
        loss = (output * torch.linspace(-1, 1, output.size(-1), device="cuda")).sum()
        loss = loss + h_n.sum() + (c_n**2).sum()
        grads = torch.autograd.grad(loss, [*model.parameters(), x])
        results.append([output, h_n, c_n, *grads])
    # cuDNN sums in its own order: a few weight-gradient entries differ by ~2e-5 (seen on H200).
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_half_precision_stays_finite(impl, dtype):
    torch.manual_seed(0)
    encoder = LSTMEncoder(12, 32, 2, bidirectional=True, impl=impl, pooling="attention").cuda()
    x = torch.randn(4, 20, 12, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        result = encoder(x, torch.tensor([20, 5, 13, 1]))
        loss = result.features.float().pow(2).mean()
    loss.backward()
    assert torch.isfinite(result.outputs.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_padding_never_reaches_reverse_direction_on_cuda(impl):
    torch.manual_seed(0)
    model = LSTM(3, 8, 2, batch_first=True, bidirectional=True, impl=impl).cuda().double()
    lengths = torch.tensor([4, 7, 1], device="cuda")
    x = torch.randn(3, 7, 3, device="cuda", dtype=torch.double)
    x[0, 4:] = x[2, 1:] = 1e3
    output, (h_n, _) = model(x, lengths=lengths)
    for b, length in enumerate(lengths.tolist()):
        alone, (h_alone, _) = model(x[b : b + 1, :length])
        torch.testing.assert_close(output[b : b + 1, :length], alone)
        torch.testing.assert_close(h_n[:, b : b + 1], h_alone)
        assert torch.all(output[b, length:] == 0)


def test_learned_initial_state_follows_the_module_to_cuda():
    encoder = LSTMEncoder(3, 4, 1, init_state="learned", impl="loop").cuda()
    result = encoder(torch.randn(2, 5, 3, device="cuda"))
    assert result.state[0].device.type == "cuda"


@pytest.mark.parametrize("conv_mode", ["serial", "parallel"])
@pytest.mark.parametrize("training", [True, False])
def test_conv_front_end_on_cuda_matches_the_cpu(training, conv_mode):
    """The CNN-LSTM and LSTM-FCN encoders (masked batch norm in training, running statistics in
    eval) give the CPU's outputs and gradients on a padded batch."""
    torch.manual_seed(0)
    options = {
        "bidirectional": True,
        "dropout": 0.0,
        "conv_channels": [8, 8],
        "conv_kernel_size": 3,
        "conv_mode": conv_mode,
    }
    cpu = LSTMEncoder(6, 16, 2, **options).train(training)
    cuda = LSTMEncoder(6, 16, 2, **options).train(training)
    cuda.load_state_dict(cpu.state_dict())
    cuda.cuda()
    x = torch.randn(4, 10, 6)
    lengths = torch.tensor([10, 2, 7, 5])
    results = []
    for model, device, lens in ((cpu, "cpu", lengths), (cuda, "cuda", lengths.cuda())):
        inp = x.to(device).requires_grad_()
        out = model(inp, lens)
        loss = out.features.sum() + out.outputs.pow(2).sum()
        grads = torch.autograd.grad(loss, [*model.parameters(), inp])
        results.append([out.features, out.outputs, *grads])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got.cpu(), want, atol=5e-5, rtol=1e-4)
    if training:
        torch.testing.assert_close(
            cuda.frontend.norms[0].running_mean.cpu(), cpu.frontend.norms[0].running_mean
        )


SYNC_FREE_ENCODERS = {
    "fused": {"impl": "fused"},
    "loop-bidirectional-attention": {"impl": "loop", "bidirectional": True, "pooling": "attention"},
    "loop-layer-norm": {"impl": "loop", "layer_norm": True, "recurrent_dropout": 0.2},
    "lstm-fcn": {
        "conv_channels": [8, 8],
        "conv_kernel_size": 3,
        "conv_mode": "parallel",
        "conv_squeeze_excite": True,
        "pooling": "mean",
    },
    "cnn-lstm": {"impl": "loop", "conv_channels": [8], "conv_kernel_size": 3},
}


@pytest.mark.parametrize("options", SYNC_FREE_ENCODERS.values(), ids=SYNC_FREE_ENCODERS.keys())
def test_the_models_training_step_never_waits_for_the_gpu(options):
    """A padded batch through the task's transfer hook (its lengths stay on the CPU), then the
    model's forward, loss and backward under torch.cuda.set_sync_debug_mode("error"): a host
    sync there raises. The task's metrics and logging are left out (torchmetrics reads values
    back), as is the optimizer step."""
    torch.manual_seed(0)
    encoder = {"hidden_size": 16, "num_layers": 2, "dropout": 0.1, "input_dropout": 0.1, **options}
    optimizer = {"_target_": "torch.optim.Adam", "lr": 1e-3}
    model = SequenceClassifier(3, 4, encoder=encoder, optimizer=optimizer).cuda().train()
    samples = [(torch.randn(n, 3), torch.tensor(n % 4)) for n in (9, 4, 7, 1)]
    batch = model.transfer_batch_to_device(pad_collate(samples), torch.device("cuda"), 0)
    assert batch["lengths"].device.type == "cpu" and batch["x"].is_cuda

    def step() -> None:
        logits = model(batch["x"], batch["lengths"])
        F.cross_entropy(logits, batch["y"]).backward()

    step()  # the first one sets cuDNN and cuBLAS up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
