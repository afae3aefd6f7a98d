"""seqvq.data"""
