"""The one quantizer and its methods, a file per method (see each file's docstring for the paper reference)."""
from .affine import AffineReparameterization
from .alternating import AlternatingOptimizer, split_batch
from .core import QuantizedResult, VectorQuantizer, perplexity, quantizer_passes
from .diagnostics import (UsageTracker, codebook_divergence, gradient_gap, plot_usage_histogram,
                          quantizers_bypassed)
from .distance import nearest_codes
from .ema import EMACodebookUpdate
from .kmeans import kmeans, kmeans_plus_plus, lloyd
from .norm import MaskedBatchNorm
from .optim import codebook_parameters, param_groups, reset_optimizer_state
from .reestimation import DataDependentReestimation
from .replacement import LRUReplacement
from .reservoir import Reservoir
from .residual import ResidualVectorQuantizer
from .stochastic import annealed_temperature, gumbel_softmax_quantize, stochastic_codes

__all__ = [
    "AffineReparameterization", "AlternatingOptimizer", "DataDependentReestimation", "EMACodebookUpdate",
    "LRUReplacement", "MaskedBatchNorm", "QuantizedResult", "Reservoir", "ResidualVectorQuantizer", "UsageTracker",
    "VectorQuantizer", "annealed_temperature", "codebook_divergence", "codebook_parameters", "gradient_gap",
    "gumbel_softmax_quantize", "kmeans", "kmeans_plus_plus", "lloyd", "nearest_codes", "param_groups", "perplexity",
    "plot_usage_histogram", "quantizer_passes", "quantizers_bypassed", "reset_optimizer_state", "split_batch",
    "stochastic_codes",
]
