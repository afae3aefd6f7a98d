"""The one quantizer and its methods, a file per method (see each file's docstring for the paper reference)."""
from .core import QuantizedResult, VectorQuantizer, perplexity
from .distance import nearest_codes
from .ema import EMACodebookUpdate
from .norm import MaskedBatchNorm
from .optim import param_groups, reset_optimizer_state

__all__ = [
    "EMACodebookUpdate", "MaskedBatchNorm", "QuantizedResult", "VectorQuantizer", "nearest_codes",
    "param_groups", "perplexity", "reset_optimizer_state",
]
