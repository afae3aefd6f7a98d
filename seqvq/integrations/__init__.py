"""seqvq.integrations"""
