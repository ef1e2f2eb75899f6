"""Multi-clip distillation: NPMP and MLP: see README.md beside this file."""
