"""seqvq: vector-quantized bottlenecks that do not collapse."""
