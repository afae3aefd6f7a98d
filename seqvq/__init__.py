"""seqvq: vector-quantized bottlenecks that do not collapse (Łańcucki et al. 2020; Huh et al. 2023)."""
from .errors import UserError
from .quantize import (AlternatingOptimizer, QuantizedResult, ResidualVectorQuantizer, VectorQuantizer,
                       param_groups, reset_optimizer_state)

__all__ = ["AlternatingOptimizer", "QuantizedResult", "ResidualVectorQuantizer", "VectorQuantizer", "param_groups",
           "reset_optimizer_state", "UserError"]
__version__ = "0.1.0"
