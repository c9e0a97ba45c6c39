"""Claims of the diffusion papers (``thrifty.diffusion``): trajectory distillers (``instaflow``, ``slimflow``,
``hyper_sd``, ``scott``, ``improved_lct``) and training-free samplers (``boss``, ``autodiffusion``, ``any_size``).
Their shared workload (toy data, teachers, seeded draws, metrics) is ``toys``; their figures are ``figures``."""
