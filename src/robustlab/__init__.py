"""robustlab: certifiably robust image classification with 1-Lipschitz networks."""

__version__ = "0.1.0"
