"""seqlab: LSTM and bidirectional-LSTM sequence models on PyTorch Lightning and Hydra."""

from seqlab.resolvers import register_resolvers

register_resolvers()
