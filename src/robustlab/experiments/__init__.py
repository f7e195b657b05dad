"""The paper's experiments: each a list of sweeps over one base config, and a report.

``EXPERIMENTS`` finds them by name; importing this package registers every one.
"""

from robustlab.experiments.experiment import (
    EXPERIMENTS,
    Experiment,
    Report,
    Setup,
    get_experiment,
    report_experiment,
    run_experiment,
)
from robustlab.experiments.launch import Execution, SubmititLauncher
from robustlab.experiments.sweep import Sweep, SweepRow, collect, run_sweep

# Each module registers its experiment.
from robustlab.experiments import (  # noqa: F401  isort: skip
    compute_scaling,
    data_scaling,
    extra_data,
    layer_comparison,
    lr_search,
    one_architecture,
    pca,
    robust_overfitting,
)

__all__ = [
    "EXPERIMENTS",
    "Execution",
    "Experiment",
    "Report",
    "Setup",
    "SubmititLauncher",
    "Sweep",
    "SweepRow",
    "collect",
    "get_experiment",
    "report_experiment",
    "run_experiment",
    "run_sweep",
]
