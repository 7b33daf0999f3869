"""Generation: one typed request in, one typed result out, on any diffusers model.

from nanobanana.generation import Generator, GenerationRequest
result = Generator().generate(GenerationRequest("a red circle on a blue background", seed=1))
"""

from nanobanana.errors import (
    GenerationCancelled,
    GenerationFailed,
    InvalidImage,
    InvalidRequest,
    ModelLoadError,
    UnsupportedMode,
)
from nanobanana.generation.aspect import AspectSize, all_sizes, closest_ratio, size_for, split_choice
from nanobanana.generation.config import (
    ASPECT_RATIOS,
    GenerationConfig,
    Limits,
    ModelConfig,
    load_generation_config,
    model_config_from_reference,
)
from nanobanana.generation.generator import Generator
from nanobanana.generation.plan import Plan
from nanobanana.generation.types import GenerationRequest, GenerationResult, Mode, Settings, StageTimings
from nanobanana.generation.uploads import load_image, load_images

__all__ = [
    "ASPECT_RATIOS",
    "AspectSize",
    "GenerationCancelled",
    "GenerationConfig",
    "GenerationFailed",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "InvalidImage",
    "InvalidRequest",
    "Limits",
    "Mode",
    "ModelConfig",
    "ModelLoadError",
    "Plan",
    "Settings",
    "StageTimings",
    "UnsupportedMode",
    "all_sizes",
    "closest_ratio",
    "load_generation_config",
    "load_image",
    "load_images",
    "model_config_from_reference",
    "size_for",
    "split_choice",
]
