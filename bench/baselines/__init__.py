"""The contestants ferryman is measured against, one module per tool.

Each function takes a :class:`~bench.workloads.base.Job` and writes the job's destination; none
imports ferryman, so each child process's peak memory is the tool's own.
"""
