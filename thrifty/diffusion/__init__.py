"""thrifty.diffusion: few-step generation, distillation and compression of diffusion and flow models.

``thrifty.diffusion.core`` holds the shared pieces (schedules in one time convention, denoiser adapters, solvers over
explicit time grids, toy data, metrics, cached teachers); ``sampling`` the training-free samplers (BOSS,
AutoDiffusion, Any-Size tiling); ``distill`` the trajectory and distribution distillers.
"""
