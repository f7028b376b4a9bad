"""The model's room: search and training, evaluation as served, the gate, the registry, lineage,
signing, and the data a challenger is retrained on."""
