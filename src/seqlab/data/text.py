"""Character-level language-modelling data: text -> character ids -> contiguous streams ->
``bptt``-long chunks, in order, for stateful truncated backpropagation through time.

As in pytorch/examples' word_language_model, a split's ids are cut into ``batch_size``
contiguous streams (``batchify``); batch ``i`` holds the ``i``-th chunk of every stream, so row
``j`` of batch ``i + 1`` continues exactly where row ``j`` of batch ``i`` ended and the model can
carry its hidden state from one batch to the next.

Order is the whole point, hence no shuffling and no sampler: the chunks come from an
`IterableDataset`, which Lightning never wraps in a `DistributedSampler` (a sampler would deal
the chunks round-robin to the ranks and break every stream). Under DDP the data module shards
instead: the text is cut into ``batch_size * world_size`` streams and rank ``r`` takes streams
``r * batch_size .. (r + 1) * batch_size - 1``, so every rank has its own contiguous streams and
the same number of batches.
"""

from __future__ import annotations

import abc
import codecs
import io
import math
import mmap
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from seqlab.data.base import SPLITS, check_count, check_option
from seqlab.data.sampler import train_position
from seqlab.errors import ConfigError, DataError

#: The id-0 token every vocabulary has: characters never seen in the training text.
UNK = "<unk>"

# Lightning warns that `__len__` may be wrong with worker processes; our chunks are always
# made in the main process (num_workers=0), where the length is exact.
warnings.filterwarnings("ignore", ".*Your `IterableDataset` has `__len__` defined.*")


def text_pieces(path: str | Path, piece: int = 1 << 22) -> Iterator[str]:
    """A UTF-8 text file's characters, ``piece`` bytes' worth at a time (universal newlines,
    a leading BOM dropped), so a file of any size is never whole in memory.

    Raises an error naming the file when it is missing, not a file or not UTF-8 (with the
    byte where decoding failed).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    # What open(path, encoding="utf-8-sig") does, with the byte offsets kept for errors.
    decoder = io.IncrementalNewlineDecoder(
        codecs.getincrementaldecoder("utf-8-sig")(), translate=True
    )
    offset = 0
    with path.open("rb") as f:
        while True:
            data = f.read(piece)
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                pending = len(err.object) - len(data)  # bytes held back from the last piece
                byte = offset - pending + err.start
                raise DataError(
                    f"{path}: not UTF-8 text (byte {byte}: {err.reason}); convert it first, "
                    f"e.g. `iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}`"
                ) from err
            offset += len(data)
            if text:
                yield text
            if not data:
                return


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents (universal newlines, a leading BOM dropped).

    Raises an error naming the file when it is missing, not a file, not UTF-8, or empty.
    """
    text = "".join(text_pieces(path))
    if not text.strip():
        raise DataError(f"{path}: the file is empty (or only whitespace)")
    return text


def id_dtype(vocabulary_size: int) -> np.dtype:
    """The smallest integer type torch reads that holds every id: a byte per character for up
    to 256 distinct ones."""
    if vocabulary_size <= 256:
        return np.dtype(np.uint8)
    return np.dtype(np.int16 if vocabulary_size <= 2**15 else np.int32)


class Vocabulary:
    """Characters <-> ids. Id 0 is `UNK`; the others are characters sorted by code point."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if not tokens or tokens[0] != UNK:
            raise ValueError(f"a vocabulary's first token must be {UNK!r}")
        if any(len(token) != 1 for token in tokens[1:]) or len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary's tokens after the first must be distinct characters")
        self.tokens = tokens
        self.index = {token: i for i, token in enumerate(tokens)}
        codes = np.array([ord(c) for c in tokens[1:]], dtype=np.int64)
        order = np.argsort(codes)
        self._codes, self._ids = codes[order], order + 1

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls([UNK, *sorted(set(text))])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> Tensor:
        """``str`` of N characters -> ``(N,)`` int64 ids; unseen characters map to 0 (`UNK`)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if not len(self._codes):
            return torch.zeros(len(codes), dtype=torch.long)
        # A vectorised dictionary lookup: millions of characters in milliseconds.
        where = np.searchsorted(self._codes, codes).clip(max=len(self._codes) - 1)
        ids = np.where(self._codes[where] == codes, self._ids[where], 0)
        return torch.from_numpy(ids)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        return "".join(self.tokens[int(i)] for i in ids)


def batchify(ids: Tensor, n_streams: int) -> Tensor:
    """``(N,)`` -> ``(n_streams, N // n_streams)``: row j is the j-th contiguous stretch of the
    text. The last ``N % n_streams`` ids are dropped."""
    length = ids.numel() // n_streams
    return ids[: n_streams * length].view(n_streams, length)


def shard_streams(ids: Tensor, batch_size: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """Rank ``rank``'s ``(batch_size, L)`` streams out of ``batch_size * world_size``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    streams = batchify(ids, batch_size * world_size)
    return streams[rank * batch_size : (rank + 1) * batch_size]


class BPTTChunks(IterableDataset):
    """``(B, L)`` streams -> batches of the next ``bptt`` steps of every stream, in order.

    Each batch is ``{"x": (B, T), "y": (B, T), "lengths": (B,)}`` with ``y`` the next
    character of ``x`` (``T = bptt``, the last chunk shorter). Every stream in a chunk is full,
    so ``lengths`` is ``T`` throughout: it is there for seqlab's batch contract only.

    With ``parts > 1`` one pass over the streams is cut into ``parts`` epochs: epoch ``e`` reads
    the ``(e mod parts)``-th of ``parts`` consecutive runs of chunks (the chunks left over by the
    division are dropped). ``position()`` says which epoch is starting and how many of its
    chunks to skip (already trained, in a run resumed mid-epoch); without it each iteration
    counts as the next epoch, from its start. ``release()``, where given, is called every
    ``RELEASE_EVERY`` chunks and at the end of a pass (a memory-mapped text lets go of the
    pages read so far).
    """

    RELEASE_EVERY = 256

    def __init__(
        self,
        streams: Tensor,
        bptt: int,
        parts: int = 1,
        position: Callable[[], tuple[int, int]] | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        if streams.dim() != 2 or streams.size(1) < 2:
            raise ValueError(f"streams must be (B, L) with L >= 2, got {tuple(streams.shape)}")
        self.streams = streams
        self.bptt = bptt
        self.n_chunks = math.ceil((streams.size(1) - 1) / bptt)
        if not 1 <= parts <= self.n_chunks:
            raise ValueError(f"parts={parts}: must be between 1 and the {self.n_chunks} chunks")
        self.parts = parts
        self.position = position
        self.release = release
        self._iterations = 0

    def __len__(self) -> int:
        return self.n_chunks // self.parts

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        epoch, skip = (self._iterations, 0) if self.position is None else self.position()
        self._iterations += 1
        first = epoch % self.parts * len(self)
        n_inputs = self.streams.size(1) - 1  # the last character is only ever a target
        for chunk in range(first + skip, first + len(self)):
            start, end = chunk * self.bptt, min((chunk + 1) * self.bptt, n_inputs)
            # Stored in the smallest type (`id_dtype`); the model embeds int64 ids.
            x = self.streams[:, start:end].long()
            yield {
                "x": x,
                "y": self.streams[:, start + 1 : end + 1].long(),
                "lengths": torch.full((x.size(0),), x.size(1), dtype=torch.long),
            }
            if self.release is not None and (chunk + 1) % self.RELEASE_EVERY == 0:
                self.release()
        if self.release is not None:
            self.release()


class CharLMDataModule(L.LightningDataModule, abc.ABC):
    """Base of the character-level language-modelling data modules.

    Subclasses say where the text comes from (``load_splits``); this class builds the
    vocabulary from the training text only, and serves the stream chunks described in the module
    docstring. ``data.batch_size`` is the number of streams per rank, ``data.bptt`` the
    chunk length (how many steps gradients flow back through).

    ``data.epochs_per_pass=k`` cuts one pass over the training text into ``k`` epochs, each
    reading the next stretch of every stream: validation, checkpoints and epoch-wise learning-rate
    schedules then come ``k`` times per pass. (``trainer.limit_train_batches`` would instead
    read the *first* part of each stream again every epoch.)
    """

    task = "language_modeling"

    def __init__(
        self, batch_size: int = 64, bptt: int = 128, epochs_per_pass: int = 1, num_workers: int = 0
    ) -> None:
        super().__init__()
        check_count("batch_size", batch_size)
        check_count("bptt", bptt)
        check_count("epochs_per_pass", epochs_per_pass)
        check_option(
            "num_workers",
            num_workers,
            num_workers == 0,
            "batches are in-order slices of one in-memory tensor, which worker processes could "
            "only duplicate or reorder; use 0",
        )
        self.batch_size = batch_size
        self.bptt = bptt
        self.epochs_per_pass = epochs_per_pass
        self.vocabulary: Vocabulary | None = None
        self.ids: dict[str, Tensor] = {}

    @abc.abstractmethod
    def load_splits(self) -> dict[str, str]:
        """The text of each split: ``{"train": ..., "val": ..., "test": ...}``."""

    def setup(self, stage: str | None = None) -> None:
        if self.ids:  # idempotent: train() sets up early to size the model
            return
        self.vocabulary, self.ids = self.load_ids()
        for split in SPLITS:
            self._check_length(split, world_size=1)

    def load_ids(self) -> tuple[Vocabulary, dict[str, Tensor]]:
        """The vocabulary of the training text and each split's ids, in `id_dtype`."""
        texts = self.load_splits()
        vocabulary = Vocabulary.from_text(texts["train"])
        dtype = id_dtype(len(vocabulary))
        return vocabulary, {
            s: torch.from_numpy(vocabulary.encode(texts[s]).numpy().astype(dtype)) for s in SPLITS
        }

    def release_pages(self) -> None:
        """Called as batches are read: ids held in memory have nothing to let go of."""

    def model_kwargs(self) -> dict[str, list[str]]:
        """The task module needs the characters (their count sizes it; generation decodes)."""
        if self.vocabulary is None:
            raise RuntimeError("call setup() before asking the data module for its vocabulary")
        return {"vocabulary": self.vocabulary.tokens}

    def _check_length(self, split: str, world_size: int) -> None:
        streams = self.batch_size * world_size
        if self.ids[split].numel() < 2 * streams:
            where = getattr(self, "path", None) or type(self).__name__  # the file, if one
            raise DataError(
                f"{where}: the {split} split has {self.ids[split].numel()} characters, too "
                f"few for {streams} streams (data.batch_size={self.batch_size} x {world_size} "
                "ranks) of 2 or more characters; lower data.batch_size or use more text"
            )
        if split == "train":  # each epoch reads its own run of chunks: it needs one at least
            chunks = math.ceil((self.ids[split].numel() // streams - 1) / self.bptt)
            check_option(
                "epochs_per_pass",
                self.epochs_per_pass,
                self.epochs_per_pass <= chunks,
                f"must be <= {chunks}, the chunks of data.bptt={self.bptt} steps in each of the "
                f"{streams} training streams",
            )

    def _rank_and_world_size(self) -> tuple[int, int]:
        # Asked at loader time, not in setup(): setup runs once, before the trainer (and so
        # the DDP ranks) may exist.
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _train_position(self) -> tuple[int, int]:
        # The trainer's counts, so a run resumed from a checkpoint reads the right stretch.
        return train_position(self.trainer)  # type: ignore[arg-type]

    def _loader(self, split: str) -> DataLoader:
        if not self.ids:
            raise RuntimeError("call setup() before asking the data module for data loaders")
        rank, world_size = self._rank_and_world_size()
        self._check_length(split, world_size)
        streams = shard_streams(self.ids[split], self.batch_size, rank, world_size)
        if split == "train":
            position = None if self.trainer is None else self._train_position
            chunks = BPTTChunks(
                streams, self.bptt, self.epochs_per_pass, position, self.release_pages
            )
        else:  # validation and test always read their whole text
            chunks = BPTTChunks(streams, self.bptt, release=self.release_pages)
        # batch_size=None: the dataset yields whole batches.
        return DataLoader(chunks, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def input_steps_per_epoch(self) -> int:
        """Time steps one training epoch feeds the model, at most: every chunk is ``batch_size``
        full streams of ``bptt`` steps (the text's last chunk may be shorter). Read by
        ``budget.max_input_steps``."""
        return len(self.train_dataloader()) * self.batch_size * self.bptt

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class TextDataModule(CharLMDataModule):
    """Character-level language modelling on any UTF-8 text file: ``data=text data.path=FILE``.

    The file is split into contiguous parts: the first ``1 - val_fraction - test_fraction`` for
    training, then validation, then test (a random split would leak phrases across splits).
    The file is read in pieces and its ids kept in a memory-mapped temporary file in
    ``cache_dir`` (null: the system's), one byte per character for up to 256 distinct ones,
    so a file of any size trains in little more memory than the model's.
    """

    def __init__(
        self,
        path: str | Path,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        bptt: int = 128,
        epochs_per_pass: int = 1,
        num_workers: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(batch_size, bptt, epochs_per_pass, num_workers)
        if not path:
            raise ConfigError("data.path is not set: data=text data.path=FILE (a UTF-8 text file)")
        for key, value in (
            ("data.val_fraction", val_fraction),
            ("data.test_fraction", test_fraction),
        ):
            if not 0 < value < 1:
                raise ConfigError(f"{key}={value}: must be in (0, 1)")
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction}: "
                "must leave some text for training (< 1)"
            )
        self.save_hyperparameters(logger=False)
        self.path = Path(path)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.cache_dir = cache_dir
        self._store: IO[bytes] | None = None
        self._map: mmap.mmap | None = None

    def release_pages(self) -> None:
        """Let go of the pages of ids read so far: the kernel counts every page of the file a
        pass has touched as the process's memory until then (they are read again if needed)."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)

    def _bounds(self, length: int) -> tuple[int, int]:
        """Where validation and test start, in characters."""
        val_start = round(length * (1 - self.val_fraction - self.test_fraction))
        return val_start, round(length * (1 - self.test_fraction))

    def load_splits(self) -> dict[str, str]:
        text = read_text(self.path)
        val_start, test_start = self._bounds(len(text))
        return {
            "train": text[:val_start],
            "val": text[val_start:test_start],
            "test": text[test_start:],
        }

    def load_ids(self) -> tuple[Vocabulary, dict[str, Tensor]]:
        """What ``load_splits`` gives, encoded, in three passes over the file, none of which
        holds it whole: its length in characters (which places the splits), the training
        part's characters (the vocabulary), then every id into the memory-mapped file."""
        length, blank = 0, True
        for piece in text_pieces(self.path):
            length += len(piece)
            blank = blank and piece.isspace()
        if blank:
            raise DataError(f"{self.path}: the file is empty (or only whitespace)")
        val_start, test_start = self._bounds(length)
        chars: set[str] = set()
        position = 0
        for piece in text_pieces(self.path):
            if position >= val_start:
                break
            chars.update(piece[: val_start - position])
            position += len(piece)
        vocabulary = Vocabulary([UNK, *sorted(chars)])
        dtype = id_dtype(len(vocabulary))
        # Unlinked at once: nothing is left on disk, even by a killed run. Open as long as the
        # data module lives (the ids are read from it), so no context manager.
        self._store = tempfile.TemporaryFile(dir=self.cache_dir)  # noqa: SIM115
        for piece in text_pieces(self.path):
            # Written, not assigned into a mapping: a page of the file is in memory only
            # while training reads it.
            self._store.write(vocabulary.encode(piece).numpy().astype(dtype).tobytes())
        self._store.flush()
        # Copy-on-write: a tensor over it may be writable, the file is never changed.
        self._map = mmap.mmap(
            self._store.fileno(), length * dtype.itemsize, access=mmap.ACCESS_COPY
        )
        ids = torch.from_numpy(np.frombuffer(self._map, dtype=dtype))
        return vocabulary, {
            "train": ids[:val_start],
            "val": ids[val_start:test_start],
            "test": ids[test_start:],
        }

    def __getstate__(self) -> dict[str, Any]:
        # A process that unpickles this (ddp_spawn) reads the file again in its own setup()
        # rather than receiving every id through a pipe; an open file cannot be pickled.
        state = self.__dict__.copy()
        state.update(_store=None, _map=None, ids={}, vocabulary=None)
        return state
