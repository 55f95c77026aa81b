"""placeholder"""
class SLURMCluster: pass
class SubmissionError(Exception): pass
