"""seqvq: vector-quantized bottlenecks that do not collapse (Łańcucki et al. 2020; Huh et al. 2023)."""
from .errors import UserError
from .quantize import (AlternatingOptimizer, BinarySphericalQuantizer, FiniteScalarQuantizer, LookupFreeQuantizer,
                       QuantizedResult, ResidualVectorQuantizer, VectorQuantizer, build_quantizer, param_groups,
                       reset_optimizer_state, reset_optimizer_state_on_step)

__all__ = ["AlternatingOptimizer", "BinarySphericalQuantizer", "FiniteScalarQuantizer", "LookupFreeQuantizer",
           "QuantizedResult", "ResidualVectorQuantizer", "VectorQuantizer", "UserError", "build_quantizer",
           "param_groups", "reset_optimizer_state", "reset_optimizer_state_on_step"]
__version__ = "0.1.0"
