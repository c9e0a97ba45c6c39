"""Trajectory distillation: fewer-step students from a teacher's ODE/SDE trajectories (or none, for iLCT)."""
