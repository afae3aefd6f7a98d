"""Discrete speech units: k-means units (cluster indices) of feature frames, as ESPnet's ``asr2`` recipes and
SpeechBrain's ``DiscreteSSL`` take them from self-supervised features (HuBERT, WavLM layers).

Not :mod:`seqvq.data.units`, the *output* units of the speech recognizer (phones, characters, subwords): a unit
here is the index of the k-means centroid nearest to one frame of features, an *input* token.

``KMeansTokenizer`` fits from a stream of padded batches in bounded memory (also under DDP, resumably), or online
batch by batch (``partial_fit``), and encodes;
``dedup`` / ``expand_runs`` turn codes into units with durations and back; ``read_*`` / ``write_*`` exchange
centroids with scikit-learn's joblib models and FAISS.  :mod:`seqvq.units.encoder_features` dumps the features of
one layer of any encoder for a Kaldi data directory.
"""
from .runs import dedup, expand_runs
from .tokenizer import KMeansTokenizer
from .toolkits import read_faiss, read_sklearn, write_faiss, write_sklearn

__all__ = ["KMeansTokenizer", "dedup", "expand_runs", "read_faiss", "read_sklearn", "write_faiss", "write_sklearn"]
