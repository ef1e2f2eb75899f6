"""Gymnasium environments: tracking (single and native vector), transfer tasks, motion completion, the dm_control adapter, the one place vector envs are made, and the ids' registration."""
