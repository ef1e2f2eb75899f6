"""MoCapAct's tracking task stepped with the ``mujoco`` bindings and vectorised numpy: the fast backend.

dm_control's ``MultiClipMocapTracking`` (:mod:`mocapact_envs.tasks.composer_tracking`) spends most of a
step in Python (composer hooks, observable callables, bindings) and recompiles the MJCF model at
every reset. :class:`~.worlds.TrackingWorlds` runs the same task on the ``mujoco.MjModel`` compiled by
that environment, built once, for a batch of worlds sharing the model: reference features are
precomputed per snippet, and features, observations, reward and termination are numpy over the
batch. Laid out as dm_control's ``locomotion/tasks/reference_pose/``:

* :mod:`.worlds`: the task (``TrackingWorlds``: starts, steps, episode ends);
* :mod:`.features`: where the walker's and the reference's features live and what one evaluation reads
  (``utils.get_features``);
* :mod:`.rewards`: the tracking error and the rewards (``rewards``);
* :mod:`.observations`: the walker's observables and the observation buffer's layout;
* :mod:`.backend`: ``FastTrackingBackend``, one world behind the env's
  :class:`~mocapact_envs.tasks.tracking_backend.TrackingBackend` interface, and the rendered ghost.

Parity with dm_control holds step for step, because the MuJoCo calls are the same:

* Step: composer writes ``ctrl`` through a binding (marking the physics dirty), then runs
  ``legacy_step`` substeps (``mj_step2``, ``mj_step1``, then the walker's ``mj_subtreeVel``), and the
  task's ``after_step`` reads a binding of the dirty physics, which runs ``mj_forward``. Here:
  ``mj_step2``, ``mj_step`` for the other substeps and ``mj_forward``: bitwise the same ``MjData``.
  The substeps skip sensors, which do not act on the dynamics and are observed only after the
  final ``mj_forward``.
* Reset: ``mj_resetData``, the reference pose, then ``mj_forward`` with actuation disabled
  (dm_control's ``after_reset``).
* Start: ``random_state.choice(len(possible_starts), p=start_probabilities)`` over the task's own
  list of starts, drawn as numpy's legacy ``choice`` draws it (one ``random_sample`` searched in the
  normalised cumulative probabilities), so a seed gives the same episodes in both backends.
* Features and observables: the formulas of ``reference_pose.tracking``, ``utils.get_features``,
  ``rewards`` and the walker's observables, batched; dm_control's own quaternion helpers where
  they accept batches.
"""
