"""Evaluation: accuracy of checkpoints and baselines on geotagged photos."""
from .evaluate import EvalResult, evaluate_checkpoint, write_outputs

__all__ = ["EvalResult", "evaluate_checkpoint", "write_outputs"]
