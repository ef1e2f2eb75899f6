"""MoCapAct's fall: any walker geom but the feet touching the floor."""

from __future__ import annotations

import numpy as np


class NonFootGroundContact:
    """Detects contact between the floor and a walker geom other than its feet.

    Call :meth:`bind` once per episode (geom ids can change when the model is
    recompiled), then :meth:`__call__` after each step.
    """

    def __init__(self, walker, arena):
        self._walker, self._arena = walker, arena
        self._walker_geoms = self._ground_geoms = np.zeros(0, dtype=int)

    def bind(self, physics) -> None:
        foot_geoms = set(self._walker.ground_contact_geoms)
        nonfoot = [geom for geom in self._walker.mjcf_model.find_all("geom") if geom not in foot_geoms]
        self._walker_geoms = np.array(physics.bind(nonfoot).element_id)
        self._ground_geoms = np.array(physics.bind(self._arena.ground_geoms).element_id)

    def __call__(self, physics) -> bool:
        contact = physics.data.contact
        geom1, geom2 = np.asarray(contact.geom1), np.asarray(contact.geom2)
        walker, ground = self._walker_geoms, self._ground_geoms
        touching = (np.isin(geom1, walker) & np.isin(geom2, ground)) | (np.isin(geom1, ground) & np.isin(geom2, walker))
        return bool(touching.any())
