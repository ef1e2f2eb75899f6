"""What the single-file trainers of ``baselines/`` share: presets and the command line, the run folder (resume checkpoint, TensorBoard), transfer-task training, Ray clusters."""
