"""Policy networks shared by the trainers, evaluation, rollout collection and loaders."""
