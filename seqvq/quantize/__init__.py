"""The one quantizer and its methods, a file per method (see each file's docstring for the paper reference)."""
from .affine import AffineOptions, AffineReparameterization
from .alternating import AlternatingOptimizer, split_batch
from .bridge import BridgeOptions, CodebookBridge
from .bsq import BinarySphericalQuantizer
from .build import build_quantizer, quantizer_section
from .core import PassKind, QuantizedResult, VectorQuantizer, perplexity, quantizer_passes
from .diagnosis import BottleneckState, Diagnosis, diagnose, initial_codebooks
from .diagnostics import (UsageTracker, codebook_divergence, gradient_gap, plot_usage_histogram,
                          quantizers_bypassed)
from .distance import nearest_codes
from .diveq import DiVeQOptions, diveq_output, space_filling_quantize
from .ema import EMACodebookUpdate
from .fsq import FiniteScalarQuantizer
from .ibq import index_backprop_output
from .kmeans import kmeans, kmeans_plus_plus, lloyd
from .lfq import LookupFreeQuantizer
from .linear_map import LinearCodebookMap
from .norm import MaskedBatchNorm
from .optimal_transport import SinkhornOptions, optimal_transport_codes, sinkhorn_potentials
from .optim import codebook_parameters, param_groups, reset_optimizer_state, reset_optimizer_state_on_step
from .peer import PeerVectorQuantize
from .reestimation import DataDependentReestimation, ReestimationOptions
from .replacement import LRUReplacement
from .reservoir import Reservoir
from .residual import ResidualVectorQuantizer
from .rotation import rotation_trick
from .stochastic import TemperatureAnneal, annealed_temperature, gumbel_softmax_quantize, stochastic_codes
from .usage import UsageRegularizerOptions, kl_to_uniform, mean_soft_assignment

__all__ = [
    "AffineOptions", "AffineReparameterization", "AlternatingOptimizer", "BinarySphericalQuantizer",
    "BottleneckState", "BridgeOptions", "CodebookBridge", "DataDependentReestimation", "DiVeQOptions", "Diagnosis",
    "EMACodebookUpdate", "FiniteScalarQuantizer", "LRUReplacement", "LinearCodebookMap", "LookupFreeQuantizer",
    "MaskedBatchNorm", "PassKind", "PeerVectorQuantize", "QuantizedResult", "ReestimationOptions", "Reservoir",
    "ResidualVectorQuantizer", "SinkhornOptions", "TemperatureAnneal", "UsageRegularizerOptions", "UsageTracker",
    "VectorQuantizer",
    "annealed_temperature", "build_quantizer", "codebook_divergence", "codebook_parameters", "diagnose",
    "diveq_output", "gradient_gap", "gumbel_softmax_quantize", "index_backprop_output", "initial_codebooks",
    "kl_to_uniform", "kmeans", "kmeans_plus_plus", "lloyd", "mean_soft_assignment", "nearest_codes",
    "optimal_transport_codes", "param_groups", "perplexity", "plot_usage_histogram", "quantizer_passes",
    "quantizer_section", "quantizers_bypassed", "reset_optimizer_state", "reset_optimizer_state_on_step",
    "rotation_trick", "sinkhorn_potentials", "space_filling_quantize", "split_batch", "stochastic_codes",
]
