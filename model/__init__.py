"""samstream's SAM 2 / 2.1: our own PyTorch implementation, loading the official checkpoints unchanged."""

from .checkpoint import check_checkpoint, embedded_checkpoint, load_model, read_state_dict, resolve_checkpoint, suggest_preset
from .config import PRESETS, HieraConfig, ModelConfig, get_config
from .errors import (CheckpointError, FrameError, PromptError, SamstreamError, StateError,
                     UnknownPresetError)
from .memory_bank import MemoryPolicy
from .prompts import Prompt
from .sam2 import SAM2Model
from .state import TrackerState
from .tracker import FrameResult, ObjectResult, StreamingTracker
from .auto_masks import (AutoMaskConfig, Proposals, box_nms, default_points_per_side, generate_masks,
                         point_grid, stability_score)

__all__ = [
    "CheckpointError", "FrameError", "check_checkpoint", "FrameResult", "HieraConfig", "MemoryPolicy", "ModelConfig", "ObjectResult",
    "PRESETS", "Prompt", "PromptError", "SAM2Model", "SamstreamError", "StateError", "StreamingTracker",
    "TrackerState", "UnknownPresetError", "embedded_checkpoint", "get_config", "load_model", "read_state_dict",
    "resolve_checkpoint", "suggest_preset",
    "AutoMaskConfig", "Proposals", "box_nms", "default_points_per_side", "generate_masks", "point_grid",
    "stability_score",
]
