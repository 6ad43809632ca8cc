"""Prediction: out-of-core, resumable sliding-window segmentation of whole volumes."""

from batteryct.predict.checkpoint import CheckpointError, TrainedModel, load_trained_model
from batteryct.predict.combine import CombineSettings, combine_series
from batteryct.predict.engine import InferenceSettings, SlidingWindowEngine
from batteryct.predict.export import export_onnx
from batteryct.predict.postprocess import PostProcessSettings, postprocess_scan
from batteryct.predict.run import PredictSettings, predict_series, single_process_trainer
from batteryct.predict.volume import Outputs

__all__ = [
    "CheckpointError",
    "CombineSettings",
    "InferenceSettings",
    "Outputs",
    "PostProcessSettings",
    "PredictSettings",
    "SlidingWindowEngine",
    "TrainedModel",
    "combine_series",
    "export_onnx",
    "load_trained_model",
    "postprocess_scan",
    "predict_series",
    "single_process_trainer",
]
