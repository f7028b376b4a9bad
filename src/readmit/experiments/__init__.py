"""Live model experiments: a challenger beside the champion (shadow or canary), judged on the
outcomes that arrive later by an anytime-valid sequential test (`sequential.py`), and simulated
experiments with a known truth to measure its error rate and power (`simulation.py`)."""
