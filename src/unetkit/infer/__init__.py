"""Prediction and evaluation: checkpoint or ONNX file -> masks, overlays, metrics.

Never imports ``unetkit.train``: the model file is the only hand-over.
"""

from .evaluate import evaluate_dirs, evaluate_model
from .inputs import collect_inputs
from .outputs import PredictReport, predict_paths
from .predict import Predictor
from .tiling import SizeRule, predict_tiled
from .writers import mask_to_labelme

__all__ = [
    "PredictReport",
    "Predictor",
    "SizeRule",
    "collect_inputs",
    "evaluate_dirs",
    "evaluate_model",
    "mask_to_labelme",
    "predict_paths",
    "predict_tiled",
]
