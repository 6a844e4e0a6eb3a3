"""Example workloads that run real code through the orchestrator (see real_work)."""
