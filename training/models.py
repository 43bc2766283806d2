# Training runs, evaluations and model versions arrive with the training issue.
