"""Neural-network parts: 1-Lipschitz layers, activations, blocks and the model zoo."""

from robustlab.nn.activations import GroupSort, MaxMin
from robustlab.nn.export import export_model
from robustlab.nn.lipschitz import LAYER_FAMILIES, LayerFamily
from robustlab.nn.models import ARCHITECTURE_VERSION, MODELS, ImageClassifier, create_model, list_models
from robustlab.nn.verify import verify_model

__all__ = [
    "ARCHITECTURE_VERSION",
    "LAYER_FAMILIES",
    "MODELS",
    "GroupSort",
    "ImageClassifier",
    "LayerFamily",
    "MaxMin",
    "create_model",
    "export_model",
    "list_models",
    "verify_model",
]
