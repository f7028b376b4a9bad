"""readmit: 30-day readmission risk for diabetic inpatients, as a workflow-as-code MLOps pipeline."""

__version__ = "0.1.0"
