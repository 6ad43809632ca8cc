"""Models: the segmentation LightningModule, its metrics, callbacks and weight transfer."""

from batteryct.models.callbacks import SaveResolvedConfig, ValidationOverlays
from batteryct.models.metrics import TotalIoU, named_scalars, segmentation_metrics
from batteryct.models.module import CHECKPOINT_KEY, SegmentationModule
from batteryct.models.weights import CheckpointMismatchError, WeightTransfer, load_matching_weights

__all__ = [
    "CHECKPOINT_KEY",
    "CheckpointMismatchError",
    "SaveResolvedConfig",
    "SegmentationModule",
    "TotalIoU",
    "ValidationOverlays",
    "WeightTransfer",
    "load_matching_weights",
    "named_scalars",
    "segmentation_metrics",
]
