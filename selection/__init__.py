"""Pure selection math: kNN similarity graphs, facility location, greedy optimizers, sampling.

No Ray here: everything takes NumPy arrays and returns NumPy arrays, so it runs the same in a
Ray task, a notebook or a test.
"""
