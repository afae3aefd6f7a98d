"""seqvq.metrics"""
