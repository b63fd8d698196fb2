"""Runs the stage graph and everything around a run: health rounds, due restarts, teardown
and the scale guard.
"""
