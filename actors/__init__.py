"""Thin Ray wrappers: they give the pure functions of selection/ and training/ their resources."""
