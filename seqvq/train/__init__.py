"""seqvq.train"""
