"""Claims of the serving papers (``thrifty.serve``): simulated on a GPU cost model (``sarathi``, ``sarathi_serve``,
``batchllm``) and measured on this CPU with the real engine (``sarathi_serve_cpu``, ``batchllm_cpu``; helpers in
``measured``)."""
