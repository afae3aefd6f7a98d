"""seqvq.models"""
