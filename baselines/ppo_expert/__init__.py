"""Clip snippet experts (PPO): see README.md beside this file."""
