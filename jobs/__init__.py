"""Entry points: stages composed into the INGENIOUS pipeline (the only package, with actors/, that knows Ray)."""
