"""torch.hub entry points: ``load_weights`` for any file, and one per registered model, named with underscores.

    model = torch.hub.load(REPO_OR_DIR, "load_weights", weights="model.safetensors", source="local")
    model = torch.hub.load(REPO_OR_DIR, "lipconvnet_cpl", weights="model.safetensors", source="local")

``weights`` is a path or URL of a file written by ``robustlab export`` (a URL is downloaded
once into torch.hub's cache); the model is rebuilt from the file's architecture record,
and a file of another model or architecture version is refused with the reason. Without
``weights``: a new model with random weights, ``input_shape`` and ``num_classes`` as given.
"""

import sys
from pathlib import Path

dependencies = ["torch", "numpy", "safetensors", "yaml"]

try:
    import robustlab  # noqa: F401  (installed)
except ImportError:  # a checkout or torch.hub's download of the repository: use its source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from robustlab.hub import entry_points  # noqa: E402

globals().update(entry_points())
