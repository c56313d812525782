"""Pure-PyTorch sequence modules: LSTM layers, initial states, a convolutional front end,
pooling and the encoder."""

from typing import TypeVar

from seqlab.nn.cell import LSTMCell
from seqlab.nn.conv import ConvFrontEnd
from seqlab.nn.encoder import EncoderOutput, LSTMEncoder
from seqlab.nn.init_state import InitialState
from seqlab.nn.lstm import LSTM, MaskedLSTM
from seqlab.nn.masking import lengths_to_mask
from seqlab.nn.pooling import Pooling

#: The encoders that ``model.encoder._target_`` may name, by dotted path, each with a few words
#: on what it is. A config's or a checkpoint's settings are data: they pick a class from here,
#: or the run stops before anything is imported (``seqlab.targets``). A fork adds its own.
ENCODERS: dict[str, str] = {
    "seqlab.nn.LSTMEncoder": "seqlab's LSTM encoder",
    "seqlab.nn.encoder.LSTMEncoder": "seqlab's LSTM encoder, by its module",
}

C = TypeVar("C", bound=type)


def register_encoder(cls: C) -> C:
    """Add ``cls`` to `ENCODERS` by its dotted path (usable as a class decorator). Only what
    is imported before settings are read is registered this way; a class that a checkpoint may
    name in a new process goes into the `ENCODERS` literal above (docs/forking.md)."""
    doc = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
    ENCODERS[f"{cls.__module__}.{cls.__qualname__}"] = doc
    return cls


__all__ = [
    "ENCODERS",
    "LSTM",
    "ConvFrontEnd",
    "EncoderOutput",
    "InitialState",
    "LSTMCell",
    "LSTMEncoder",
    "MaskedLSTM",
    "Pooling",
    "lengths_to_mask",
    "register_encoder",
]
