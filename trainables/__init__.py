"""Everything that runs inside a trial: model loading, data, training, evaluation."""
