"""Pure-PyTorch sequence modules: LSTM layers, initial states, a convolutional front end,
pooling and the encoder."""

from seqlab.nn.cell import LSTMCell
from seqlab.nn.conv import ConvFrontEnd
from seqlab.nn.encoder import EncoderOutput, LSTMEncoder
from seqlab.nn.init_state import InitialState
from seqlab.nn.lstm import LSTM
from seqlab.nn.masking import lengths_to_mask
from seqlab.nn.pooling import Pooling

__all__ = [
    "LSTM",
    "ConvFrontEnd",
    "EncoderOutput",
    "InitialState",
    "LSTMCell",
    "LSTMEncoder",
    "Pooling",
    "lengths_to_mask",
]
