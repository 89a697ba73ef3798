"""portprint.models: the autoencoders, their thresholds, the model folder on disk and evaluation metrics; used by
udfs/ (scoring) and jobs/ (train, evaluate). Imports nothing of udfs/ or jobs/."""
