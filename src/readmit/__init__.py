"""readmit: 30-day readmission risk of diabetic inpatients, as workflow-as-code MLOps."""

__version__ = "0.1.0"
