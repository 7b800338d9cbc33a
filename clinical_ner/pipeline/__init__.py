"""MLOps policy: stage settings, registry, gating, deployment, retraining, tracking, monitoring."""
