"""readmit: 30-day readmission risk of diabetic inpatients, as workflow-as-code MLOps.

One room per stage of the loop, in the order data travels:

- ``data``: load and split feeds, the model's cohort, GX validation and quarantine, the inbox;
- ``features``: what is known at prediction time (``features.KNOWN_AT_PREDICTION``), encoding;
- ``model``: search, evaluation as served, the one gate, lifecycle, registry, lineage;
- ``serving``: the request contract, the guard, the served-path scorer, the prediction log;
- ``monitoring``: profiles, the drift statistic registry, the reference, simulation;
- ``reports``: the one HTML page shell and the pages built on it;
- ``ops``: deployment, process supervision, the audit log.

``settings``, ``schema``, ``storage`` and ``layout`` sit at the top because every room reads them.
The library never imports ``flows``; flows wire it, and the command line wires flows.
"""

__version__ = "0.1.0"
