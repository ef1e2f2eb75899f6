"""The single-file trainers: ``python baselines/<folder>/<file>.py`` in a checkout, ``python -m
baselines.<folder>.<file>`` (or the ``mocapact-train-*`` commands) from an install. They need the
``[train]`` extra (the sweep also ``[ray]``)."""

from mocapact_envs.extras import require_extra

require_extra("baselines/ (the trainers)", "torch", "tyro")
