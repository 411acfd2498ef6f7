"""Pure PyTorch / transformers: tokenizers, packing, models, the train loop, embedding, evaluation.

No Ray here: the Ray Train launcher in actors/ calls these functions inside each worker.
"""
