"""A checkpoint is data: the ``_target_``s in its saved settings never pick what code runs.

Each test takes a checkpoint of a tiny trained model, rewrites the settings saved in it (as
anyone handing out a checkpoint could: it still loads with ``torch.load(weights_only=True)``)
and loads it through every way seqlab has of loading one. Each must refuse it with one line
naming the file, the key and the value, before anything named in it is imported or called: the
file the payload would write is never written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import seqlab.evaluate
import seqlab.export
import seqlab.generate
import seqlab.predict
import seqlab.train
from seqlab.config_checks import check_config
from seqlab.errors import USER_ERROR_EXIT, ConfigError, UserError
from seqlab.nn import ENCODERS, LSTMEncoder, register_encoder
from seqlab.tasks import LanguageModel, SequenceClassifier, SequenceTask
from seqlab.train import train
from seqlab.trained import load_task, read_checkpoint
from tests.conftest import TINY, compose_config

FORK = f"{__name__}.ForkEncoder"


class ForkEncoder(LSTMEncoder):
    """A fork's own encoder (seqlab's LSTM under another name)."""


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("classifier") / "run"
    train(compose_config("train", [*TINY, "test=false"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def language_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    (root / "corpus.txt").write_text("to be or not to be, that is the question\n" * 20)
    overrides = [
        *TINY,
        "data=text",
        f"data.path={root / 'corpus.txt'}",
        "data.bptt=16",
        "data.batch_size=4",
    ]
    train(compose_config("train", [*overrides, "model.encoder.num_layers=1", "test=false"], root))
    return root / "checkpoints" / "last.ckpt"


def tampered(checkpoint: Path, path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """``checkpoint`` with its saved settings (hyperparameters) changed by ``edit``, at ``path``."""
    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    edit(contents["hyper_parameters"])
    torch.save(contents, path)
    torch.load(path, weights_only=True)  # still a plain, weights-only checkpoint
    return path


def opens(victim: Path) -> dict[str, Any]:
    """Settings that, built by Hydra, open (create) ``victim`` for writing."""
    return {"_target_": "builtins.open", "file": str(victim), "mode": "w"}


# name -> (how the settings are changed, given the file a payload writes; what the error names)
PAYLOADS: dict[str, tuple[Callable[[Path], Callable[[dict[str, Any]], None]], str]] = {
    "encoder_target": (
        lambda victim: (
            lambda hp: hp["encoder"].update(
                {"_target_": "numpy.savetxt", "fname": str(victim), "X": [[1.0]]}
            )
        ),
        "model.encoder._target_='numpy.savetxt'",
    ),
    "nested": (
        lambda victim: lambda hp: hp["encoder"].update(some_key=opens(victim)),
        "model.encoder.some_key._target_='builtins.open'",
    ),
    "in_a_list": (
        lambda victim: lambda hp: hp["encoder"].update(some_list=[1, {"x": opens(victim)}]),
        "model.encoder.some_list[1].x._target_='builtins.open'",
    ),
    "registered_class_nested": (
        lambda victim: (
            lambda hp: hp["encoder"].update(
                inner={"_target_": "seqlab.nn.LSTMEncoder", "input_size": 1, "hidden_size": 2}
            )
        ),
        "model.encoder.inner._target_='seqlab.nn.LSTMEncoder'",
    ),
    "head": (
        lambda victim: lambda hp: hp.update(head=opens(victim)),
        "model.head._target_='builtins.open'",
    ),
    "optimizer": (
        lambda victim: (
            lambda hp: hp.update(optimizer={"_target_": "torch.save", "obj": 1, "f": str(victim)})
        ),
        "model.optimizer._target_='torch.save'",
    ),
    "optimizer_nested": (
        lambda victim: lambda hp: hp["optimizer"].update(lr=opens(victim)),
        "model.optimizer.lr._target_='builtins.open'",
    ),
    "scheduler": (
        lambda victim: lambda hp: hp.update(scheduler={**opens(victim), "_target_": "io.open"}),
        "model.scheduler._target_='io.open'",
    ),
}


@pytest.fixture(params=list(PAYLOADS))
def payload(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Callable, str, Path]:
    make, names = PAYLOADS[request.param]
    victim = tmp_path / "pwned"
    return make(victim), names, victim


def refused(error: BaseException, checkpoint: Path, names: str) -> None:
    """``error`` is one line naming the checkpoint file, the key and the value."""
    assert isinstance(error, ConfigError), repr(error)
    assert len(error.problems) == 1, error.problems
    (line,) = error.problems
    assert str(checkpoint) in line and names in line


def test_read_checkpoint_refuses_it(classifier, payload, tmp_path) -> None:
    edit, names, victim = payload
    bad = tampered(classifier, tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError) as error:
        read_checkpoint(bad)
    refused(error.value, bad, names)
    assert f"ckpt_path={bad}: " in str(error.value)
    assert not victim.exists()


def test_load_task_refuses_it(classifier, payload, tmp_path) -> None:
    edit, names, victim = payload
    bad = tampered(classifier, tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError) as error:
        load_task(bad, SequenceClassifier)
    refused(error.value, bad, names)
    assert not victim.exists()


def test_load_from_checkpoint_refuses_it(classifier, payload, tmp_path) -> None:
    edit, names, victim = payload
    bad = tampered(classifier, tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError) as error:
        SequenceClassifier.load_from_checkpoint(bad, map_location="cpu")
    refused(error.value, bad, names)
    assert f"checkpoint_path={bad}: " in str(error.value)
    assert not victim.exists()


def test_the_base_class_refuses_it_too(classifier, tmp_path) -> None:
    """``SequenceTask`` checks its settings itself: a fork's task inherits the check."""
    victim = tmp_path / "pwned"
    edit = PAYLOADS["nested"][0](victim)
    bad = tampered(classifier, tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError, match=r"model\.encoder\.some_key\._target_='builtins\.open'"):
        SequenceTask.load_from_checkpoint(bad, map_location="cpu")
    assert not victim.exists()


@pytest.mark.parametrize(
    ("entry", "config", "overrides"),
    [
        (seqlab.evaluate.main, "eval", []),
        (seqlab.predict.main, "predict", ["split=val"]),
        (seqlab.export.main, "export", ["format=torch_export"]),
    ],
    ids=["eval", "predict", "export"],
)
def test_entry_points_exit_2_with_one_error_line(
    classifier, payload, tmp_path, caplog, entry, config, overrides
) -> None:
    edit, names, victim = payload
    bad = tampered(classifier, tmp_path / "bad.ckpt", edit)
    cfg = compose_config(config, [f"ckpt_path={bad}", *overrides], tmp_path / "run")
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        entry(cfg)
    assert stop.value.code == USER_ERROR_EXIT
    errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("error:")]
    assert len(errors) == 1, errors
    assert str(bad) in errors[0] and names in errors[0]
    assert not victim.exists()
    assert not list((tmp_path / "run").glob("model.*")), "nothing exported"


def test_generate_refuses_it(language_model, payload, tmp_path, caplog) -> None:
    edit, names, victim = payload
    bad = tampered(language_model, tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError) as error:
        seqlab.generate.load_language_model(bad)
    refused(error.value, bad, names)
    with pytest.raises(ConfigError) as error:
        LanguageModel.load_from_checkpoint(bad, map_location="cpu")
    refused(error.value, bad, names)
    cfg = compose_config("generate", [f"ckpt_path={bad}", "prompt=to"], tmp_path / "run")
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        seqlab.generate.main(cfg)
    assert stop.value.code == USER_ERROR_EXIT
    errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("error:")]
    assert len(errors) == 1 and names in errors[0] and str(bad) in errors[0], errors
    assert not victim.exists()


def test_a_settings_string_is_never_resolved_into_a_target(classifier, tmp_path) -> None:
    """Hydra resolves ``${oc.create:...}`` in a string into a node it then builds; seqlab
    passes strings on as they are."""
    victim = tmp_path / "pwned"
    create = f"${{oc.create:'{{_target_: builtins.open, file: {victim}, mode: w}}'}}"
    bad = tampered(classifier, tmp_path / "bad.ckpt", lambda hp: hp["encoder"].update(x=create))
    read_checkpoint(bad)  # nothing to refuse in it: a string
    with pytest.raises((TypeError, UserError)):  # LSTMEncoder takes no `x`
        SequenceClassifier.load_from_checkpoint(bad, map_location="cpu")
    with pytest.raises(UserError, match="not of a SequenceClassifier"):
        load_task(bad, SequenceClassifier)
    assert not victim.exists()


def test_hparams_file_is_named_when_the_settings_come_from_it(classifier, tmp_path) -> None:
    victim = tmp_path / "pwned"
    hparams = tmp_path / "hparams.yaml"
    settings = read_checkpoint(classifier)["hyper_parameters"]
    settings["encoder"]["x"] = opens(victim)
    hparams.write_text(yaml.safe_dump(settings))
    with pytest.raises(ConfigError, match=rf"hparams_file={hparams}: model\.encoder\.x\._target_"):
        SequenceClassifier.load_from_checkpoint(classifier, hparams_file=hparams)
    assert not victim.exists()


def test_an_unregistered_encoder_is_refused_before_training(make_cfg, caplog) -> None:
    cfg = make_cfg(f"model.encoder._target_={FORK}")
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    (line,) = error.value.problems
    assert f"model.encoder._target_='{FORK}'" in line and "seqlab.nn.ENCODERS" in line
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        seqlab.train.main(cfg)
    assert stop.value.code == USER_ERROR_EXIT
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_a_nested_target_in_a_config_is_refused_before_training(make_cfg, tmp_path) -> None:
    cfg = make_cfg(f"+model.encoder.init={{_target_: builtins.open, file: {tmp_path / 'x'}}}")
    with pytest.raises(ConfigError, match=r"model\.encoder\.init\._target_='builtins\.open'"):
        check_config(cfg)


def test_a_registered_fork_encoder_round_trips_through_a_checkpoint(
    make_cfg, monkeypatch, tmp_path
) -> None:
    monkeypatch.setitem(ENCODERS, FORK, "")
    assert register_encoder(ForkEncoder) is ForkEncoder
    assert ENCODERS[FORK] == "A fork's own encoder (seqlab's LSTM under another name)."
    cfg = make_cfg(f"model.encoder._target_={FORK}", "test=false")
    check_config(cfg)
    train(cfg)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"

    loaded = load_task(checkpoint, SequenceClassifier)
    again = SequenceClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    assert type(loaded.encoder) is ForkEncoder and type(again.encoder) is ForkEncoder
    x, lengths = torch.randn(3, 7, 12), torch.tensor([7, 4, 1])
    torch.testing.assert_close(loaded(x, lengths), again(x, lengths))
    evaluated = compose_config("eval", [f"ckpt_path={checkpoint}"], tmp_path / "eval")
    assert "test/acc" in seqlab.evaluate.evaluate(evaluated)

    monkeypatch.delitem(ENCODERS, FORK)  # a process that does not register it refuses it
    with pytest.raises(ConfigError, match=rf"model\.encoder\._target_='{FORK}'.*ENCODERS"):
        load_task(checkpoint, SequenceClassifier)
