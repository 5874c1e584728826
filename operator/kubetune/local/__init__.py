"""The local backend of ``kubetune run``: trials as local processes, the same plan as the operator."""

from .runner import LocalRunner, RunResult

__all__ = ["LocalRunner", "RunResult"]
