"""Code shared by every stage: IO, data, checkpoints, logging, stage bookkeeping, toy faces."""
