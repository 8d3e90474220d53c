"""The model zoo: small trained models with their data, and the accuracy harness."""
from edgert.zoo.harness import Evaluation, calibration_data, evaluate, validation_data
from edgert.zoo.registry import ZooModel, get, list_models

__all__ = ["Evaluation", "ZooModel", "calibration_data", "evaluate", "get", "list_models", "validation_data"]
