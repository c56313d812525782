"""Character-level language modelling with stateful truncated backpropagation through time.

ids (B, T) -> embedding (B, T, E) -> LSTMEncoder, many-to-many (B, T, H) -> logits (B, T, V).

Batches are consecutive ``bptt``-long chunks of ``B`` contiguous streams (see
`seqlab.data.text`). The model carries its LSTM state from one chunk to the next, so it reads
each stream as one long sequence, but detaches it in between ("repackage", as in
pytorch/examples' word_language_model): gradients flow back through one chunk only. Each stage
(train, val, test, predict) has its own carried state, reset when that stage's epoch starts, so
validation never starts from where training left off, nor training from validation's state.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from seqlab.data.text import UNK, Vocabulary
from seqlab.tasks.base import SequenceTask
from seqlab.tasks.pictures import Picture, PictureOptions, TestPictures, samples_figure

log = logging.getLogger(__name__)

State = tuple[Tensor, Tensor]


class BitsPerCharacter(Metric):
    """Mean cross-entropy per character, in bits: sum of token NLLs (nats) / tokens / ln 2.

    Sums, not batch means, are the state, so a short last chunk weighs what it holds and the
    DDP reduction (a sum over ranks) is exact.
    """

    higher_is_better = False
    full_state_update = False
    # States, registered by add_state.
    nll_sum: Tensor
    tokens: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("nll_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, token_nll: Tensor) -> None:
        """``token_nll``: the cross-entropy (nats) of each predicted token, any shape."""
        self.nll_sum += token_nll.detach().sum(dtype=torch.float64)
        self.tokens += token_nll.numel()

    def compute(self) -> Tensor:
        return (self.nll_sum / self.tokens / math.log(2)).float()


class LanguageModel(SequenceTask):
    """Next-character prediction: ``x (B, T) int64 -> logits (B, T, V)``.

    ``vocabulary`` (from the data) is saved with the hyperparameters, so a checkpoint alone can
    generate text. ``embedding_size`` is the character embedding's width; ``tie_weights`` shares
    it with the output layer's weights (Press & Wolf, 2017), which needs ``embedding_size`` equal
    to the output layer's input size.
    """

    causal = True
    per_step = True
    export_kind = "ids"

    def __init__(
        self,
        vocabulary: list[str],
        encoder: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        head: dict[str, Any] | None = None,
        embedding_size: int = 64,
        tie_weights: bool = False,
    ) -> None:
        super().__init__(encoder, optimizer, scheduler)
        self.save_hyperparameters()
        self.vocabulary = Vocabulary(vocabulary)
        self.embedding = nn.Embedding(len(self.vocabulary), embedding_size)
        self.build_network(embedding_size, len(self.vocabulary), encoder, head)
        if tie_weights:
            decoder = self.head.net[-1]
            if decoder.in_features != embedding_size:
                raise ValueError(
                    f"model.tie_weights=true needs model.embedding_size ({embedding_size}) equal "
                    f"to the output layer's input size ({decoder.in_features}: the encoder's "
                    "output size, or model.head.hidden_size when set)"
                )
            decoder.weight = self.embedding.weight
        self.train_bpc = BitsPerCharacter()
        self.val_bpc = BitsPerCharacter()
        self.test_bpc = BitsPerCharacter()
        # stage -> the detached (h, c) that the stage's next chunk starts from.
        self.carried_state: dict[str, State] = {}

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """``x (B, T)``, state ``((L, B, Hp), (L, B, H))`` or None (the encoder's initial state)
        -> ``logits (B, T, V)``, the state after the last step."""
        out = self.encoder(self.embedding(x), state=state)
        return self.head(out.outputs), out.state

    def forward_carried(self, x: Tensor, stage: str) -> Tensor:
        """Logits of the next chunk of ``stage``'s streams, starting from the state the previous
        chunk ended in; keeps the new final state, detached, for the chunk after."""
        logits, state = self(x, self.carried_state.get(stage))
        # Repackage: the next chunk starts from these values, but backpropagation stops here.
        self.carried_state[stage] = (state[0].detach(), state[1].detach())
        return logits

    def reset_state(self, stage: str | None = None) -> None:
        """Forget the carried state of ``stage`` (every stage if None)."""
        if stage is None:
            self.carried_state.clear()
        else:
            self.carried_state.pop(stage, None)

    def on_train_epoch_start(self) -> None:
        self.reset_state("train")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Mid-epoch, the next training chunk continues from this state: a run resumed from
        # this checkpoint must start there too (it is reset at every epoch start anyway).
        if "train" in self.carried_state:
            checkpoint["carried_train_state"] = self.carried_state["train"]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "carried_train_state" in checkpoint:
            self.carried_state["train"] = checkpoint["carried_train_state"]

    def on_train_start(self) -> None:
        # A state restored from a checkpoint was loaded on the CPU; the model is now in place.
        state = self.carried_state.get("train")
        if state is not None:
            self.carried_state["train"] = (state[0].to(self.device), state[1].to(self.device))

    def on_validation_epoch_start(self) -> None:
        self.reset_state("val")

    def on_test_epoch_start(self) -> None:
        self.reset_state("test")

    def on_predict_epoch_start(self) -> None:
        self.reset_state("predict")

    def shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self.forward_carried(batch["x"], stage)
        # fp32 even under mixed precision; one NLL per token feeds both the loss and the bpc.
        token_nll = F.cross_entropy(
            logits.float().flatten(0, 1), batch["y"].flatten(), reduction="none"
        )
        loss = token_nll.mean()
        loss = self.reduce_loss(stage, loss, weight=token_nll.numel())
        bpc = getattr(self, f"{stage}_bpc")
        bpc.update(token_nll)
        self.log_epoch(stage, f"{stage}/bpc", bpc, prog_bar=stage != "train")
        return loss

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.forward_carried(batch["x"], "predict")

    def test_pictures(self, options: PictureOptions) -> TestPictures | None:
        return SamplePictures(self, options)

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_chars: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """``prompt`` followed by ``max_new_chars`` sampled characters.

        ``temperature`` scales the logits (0: always the most likely character), ``top_k``
        samples among the k most likely only. The same ``seed`` gives the same text; the
        global random state is left alone.
        """
        if not prompt:
            raise ValueError("prompt is empty: give at least one character to start from")
        if max_new_chars < 0:
            raise ValueError(f"max_new_chars={max_new_chars}: must be >= 0")
        if temperature < 0:
            raise ValueError(f"temperature={temperature}: must be >= 0 (0: greedy)")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k={top_k}: must be a positive integer or None")
        unknown = sorted({c for c in prompt if c not in self.vocabulary.index})
        if unknown:
            log.warning("prompt characters %s are not in the vocabulary: read as %s", unknown, UNK)

        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        was_training = self.training
        self.eval()
        try:
            ids = self.vocabulary.encode(prompt).to(self.device)[None]
            logits, state = self(ids)
            new_ids: list[int] = []
            for _ in range(max_new_chars):
                next_id = self._sample(logits[0, -1], temperature, top_k, generator)
                new_ids.append(int(next_id))
                if len(new_ids) < max_new_chars:
                    logits, state = self(next_id.view(1, 1), state)
        finally:
            self.train(was_training)
        return prompt + self.vocabulary.decode(new_ids)

    @staticmethod
    def _sample(
        logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator
    ) -> Tensor:
        logits = logits.float().clone()
        # `<unk>` never occurs in the training text: the model has nothing to say with it.
        logits[0] = -math.inf
        if temperature == 0:
            return logits.argmax()
        logits = logits / temperature
        if top_k is not None and top_k < logits.numel():
            kth_largest = torch.topk(logits, top_k).values[-1]
            logits[logits < kth_largest] = -math.inf
        return torch.multinomial(logits.softmax(-1), 1, generator=generator)[0]


class SamplePictures(TestPictures):
    """``samples``: text sampled from prompts taken from the test text (the first
    ``prompt_length`` characters of the first ``num_samples`` test rows), as a picture, as
    ``samples.txt`` and as a wandb table."""

    def __init__(self, model: LanguageModel, options: PictureOptions) -> None:
        self.model = model
        self.options = options
        self.prompts: list[str] = []

    def update(self, trainer: L.Trainer, batch: dict[str, Tensor]) -> None:
        if not trainer.is_global_zero:
            return
        missing = self.options.num_samples - len(self.prompts)
        for ids in batch["x"][: max(missing, 0)]:
            self.prompts.append(self.model.vocabulary.decode(ids[: self.options.prompt_length]))

    def test_end(self, trainer: L.Trainer) -> list[Picture]:
        if not self.prompts:
            return []
        length, temperature = self.options.sample_length, self.options.sample_temperature
        rows = []
        for seed, prompt in enumerate(self.prompts):
            text = self.model.generate(prompt, length, temperature=temperature, seed=seed)
            rows.append((prompt, text[len(prompt) :]))
        lines = [f"# temperature {temperature}, {length} characters"]
        for prompt, sample in rows:
            lines += ["", f"## prompt: {prompt!r}", prompt + sample]
        return [
            Picture(
                "samples",
                samples_figure(rows),
                files={"samples.txt": "\n".join(lines) + "\n"},
                table=(["prompt", "sample"], [list(r) for r in rows]),
            )
        ]
