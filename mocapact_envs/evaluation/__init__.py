"""MoCapAct's evaluation: its metrics, its protocol for experts and multi-clip policies, figures."""
