"""Methods that need several processes, on ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

``spawn`` runs a function in local processes joined in a process group (how the tests and claims run);
under ``torchrun`` the same functions run after ``init_from_env()``.
"""

from thrifty.distributed.launch import default_backend, init_from_env, spawn

__all__ = ["default_backend", "init_from_env", "spawn"]
