"""The catalogue: every paper of the seed (63), where its method lives in thrifty, and how far it got.

Each :class:`Paper` names the paper (title exactly as in the seed list, arXiv id), the field folder of
the package it belongs to, its method keys (the first is the paper's key), the public import path of
its main object (``"module:Name"``) and a status:

* ``"implemented"``: the code exists, it has tests, and it has a runnable claim (``thrifty bench KEY``);
* ``"partial"``: some of it exists; the note says what is missing;
* ``"planned"``: nothing is importable yet; the import path is where it will live.

``reference`` says what the tests check the implementation against (``REFERENCES``): the official code's figures,
a maintained peer library, or formulas derived from the paper; ``reference_note`` names the source.

Honesty rule: a paper is marked ``"implemented"`` only when code, tests and claim all exist. Nothing
here is checked at import time; ``tests/test_catalog.py`` holds the checks, and
:meth:`Paper.resolve` simply fails for a path that does not exist yet.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FIELDS", "PAPERS", "REFERENCES", "STATUSES", "Paper", "filter_papers", "get_paper"]

FIELDS: tuple[str, ...] = (
    "optim",
    "schedules",
    "batching",
    "distributed",
    "compress",
    "nn",
    "diffusion",
    "threed",
    "serve",
    "data",
)
STATUSES: tuple[str, ...] = ("implemented", "partial", "planned")
# What the tests check an implementation against: figures produced by running the paper's official code (stored as
# fixtures), a maintained peer library run live or through fixtures, or formulas derived from the paper (and, where
# code is public, from reading it; no figures of it); "none yet" for what is not built.
REFERENCES: tuple[str, ...] = ("official code", "peer library", "paper formulas", "none yet")


@dataclass(frozen=True)
class Paper:
    """One seed paper and the thrifty method(s) that reproduce it."""

    key: str
    title: str
    arxiv: str | None
    field: str
    methods: tuple[str, ...]
    import_path: str
    status: str
    note: str = ""
    reference: str = "none yet"
    reference_note: str = ""

    def resolve(self) -> object:
        """Import ``import_path`` and return the named attribute (fails while the code is planned)."""
        module, _, attr = self.import_path.partition(":")
        return getattr(importlib.import_module(module), attr)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``methods`` as a list)."""
        return {**asdict(self), "methods": list(self.methods)}


def _p(
    key: str,
    title: str,
    arxiv: str | None,
    field: str,
    import_path: str,
    *,
    methods: tuple[str, ...] = (),
    status: str = "planned",
    note: str = "",
    reference: str = "none yet",
    reference_note: str = "",
) -> Paper:
    """Build a Paper whose method keys start with ``key``."""
    return Paper(key, title, arxiv, field, (key, *methods), import_path, status, note, reference, reference_note)


_ENTRIES: tuple[Paper, ...] = (
    # optim
    _p(
        "adam8bit",
        "8-bit Optimizers via Block-wise Quantization",
        "2110.02861",
        "optim",
        "thrifty.optim.adam8bit:Adam8bit",
        methods=("adamw8bit", "sgd8bit", "blockwise_quant"),
        status="implemented",
        note="states in 8 bits with block-wise absmax and the dynamic code; quant core in thrifty.compress",
        reference="peer library",
        reference_note="bitsandbytes: dynamic map bit-identical, 8-bit trajectories within 0.2% loss",
    ),
    _p(
        "bsvrb",
        "Blockwise Stochastic Variance-Reduced Methods with Parallel Speedup for Multi-Block Bilevel Optimization",
        "2305.18730",
        "optim",
        "thrifty.optim.bsvrb:BSVRB",
        status="implemented",
        note="multi-block bilevel; v2 tracks Hessian-vector products, no Hessian inverse",
        reference="paper formulas",
    ),
    _p(
        "diffgrad",
        "diffGrad: An Optimization Method for Convolutional Neural Networks",
        "1909.11015",
        "optim",
        "thrifty.optim.diffgrad:DiffGrad",
        status="implemented",
        note="follows diffGrad_v2.py (the paper's diffGrad.py aliases the previous gradient)",
        reference="official code",
        reference_note="figures from shivram1987/diffGrad, bit-identical in float64",
    ),
    _p(
        "convex_relu",
        "Efficient Global Optimization of Two-layer ReLU Networks: Quadratic-time Algorithms and Adversarial Training",
        "2201.01965",
        "optim",
        "thrifty.optim.convex_relu:ConvexReLUADMM",
        methods=("convex_relu_scp",),
        note="a convex solver (ADMM, sampled convex program), not a torch.optim.Optimizer",
    ),
    _p(
        "frugal",
        "FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable Training",
        "2411.07837",
        "optim",
        "thrifty.optim.frugal:FRUGAL",
        status="implemented",
        note="AdamW state-full part; SVD, random or whole-tensor subspaces; identity basis at density 1",
        reference="paper formulas",
    ),
    _p(
        "agvm",
        "Large-batch Optimization for Dense Visual Predictions",
        "2210.11078",
        "optim",
        "thrifty.optim.agvm:AGVM",
        status="implemented",
        note="per-module LR modulation wrapped around any optimizer, as the official AgvmOptimizerHook",
        reference="paper formulas",
    ),
    _p(
        "sgd_sai",
        "No More Adam: Learning Rate Scaling at Initialization is All You Need",
        "2412.11768",
        "optim",
        "thrifty.optim.sgd_sai:SGDSaI",
        status="implemented",
        note="g-SNR per parameter tensor, frozen after the first step, as in the official code",
        reference="official code",
        reference_note="figures from AnonymousAlethiometer/SGD_SaI, bit-identical in float64",
    ),
    _p(
        "soap",
        "SOAP: Improving and Stabilizing Shampoo using Adam",
        "2409.11321",
        "optim",
        "thrifty.optim.soap:SOAP",
        status="implemented",
        reference="official code",
        reference_note="figures from nikhilvyas/SOAP, within 9e-7 over 30 float32 steps",
    ),
    _p(
        "sso",
        "Target-based Surrogates for Stochastic Optimization",
        "2302.02607",
        "optim",
        "thrifty.optim.sso:SSO",
        status="implemented",
        note="the official SGD_FMDOpt: eta an inverse step size, no 1/2 on the proximity term, Armijo inner steps",
        reference="paper formulas",
    ),
    # schedules
    _p(
        "rmt_scaling",
        "Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network Training",
        "2006.09092",
        "schedules",
        "thrifty.schedules.lanczos_lr:LanczosLR",
        methods=("lanczos_lr", "scaling_rules"),
        status="implemented",
        note="scale_lr: linear (SGD) and square-root (Adam) rules; Lanczos learner: Polyak heavy-ball rates x 1/4",
        reference="paper formulas",
    ),
    _p(
        "schedule_refinement",
        "When, Why and How Much? Adaptive Learning Rate Scheduling by Refinement",
        "2310.07831",
        "schedules",
        "thrifty.schedules.refined:RefinedLR",
        methods=("linear_decay", "refined"),
        status="implemented",
        note="l2 rule (SGD) and l1 rule (Adam); median filter as in the authors' plotting scripts",
        reference="paper formulas",
    ),
    # batching
    _p(
        "adadagrad",
        "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
        "2402.11215",
        "batching",
        "thrifty.batching.adadagrad:AdAdaGrad",
        methods=("adadagrad_norm",),
        status="implemented",
        note="norm, augmented inner-product and coordinate-wise tests from per-sample (vmap) or micro-batch "
        "gradients; formulas from the card and Bollapragada et al. (the paper's body was not checked)",
        reference="paper formulas",
        reference_note="AdaGrad and AdaGradNorm bit-identical to torch.optim.Adagrad; the batch-size tests from the paper",
    ),
    _p(
        "conadv",
        "Concurrent Adversarial Learning for Large-Batch Training",
        "2106.00221",
        "batching",
        "thrifty.batching.conadv:ConAdv",
        status="implemented",
        reference="paper formulas",
    ),
    _p(
        "sgd_noise",
        "Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning",
        "2301.13703",
        "batching",
        "thrifty.batching.sgd_noise:AlphaScaledModel",
        status="implemented",
        note="study: reproduced as an experiment; no new API beyond an alpha-scaled model and an lr/B sweep",
        reference="paper formulas",
    ),
    _p(
        "ghost_bn",
        "Train longer, generalize better: closing the generalization gap in large batch training of neural networks",
        "1705.08741",
        "batching",
        "thrifty.batching.ghost_bn:GhostBatchNorm",
        methods=("regime_adaptation",),
        status="implemented",
        reference="paper formulas",
    ),
    _p(
        "duration_bucketing",
        "Training and Inference Efficiency of Encoder-Decoder Speech Models",
        "2503.05931",
        "batching",
        "thrifty.batching.duration_bucketing:DurationBucketingSampler",
        note="2-D duration bucketing with per-bucket batch sizes; the decoder-to-encoder shift is a study",
    ),
    # distributed
    _p(
        "one_byte",
        "Just One Byte (per gradient): A Note on Low-Bandwidth Decentralized Language Model "
        "Finetuning Using Shared Randomness",
        "2306.10015",
        "distributed",
        "thrifty.distributed.one_byte:SharedSeedSPSA",
        status="implemented",
        note="int8 projected gradient per step over all_gather; parameters on a power-of-two grid so in-place "
        "perturbations restore bit-exactly and replicas stay identical",
        reference="paper formulas",
    ),
    _p(
        "oneflow",
        "OneFlow: Redesign the Distributed Deep Learning Framework from Scratch",
        "2110.15032",
        "distributed",
        "thrifty.distributed.oneflow:TensorParallelMLP",
        methods=("sbp",),
        status="implemented",
        note="SBP layouts as DTensor placements, the boxing cost table (measured), matmul signatures and a "
        "tensor-parallel MLP; the actor runtime and 2-D (hierarchical) SBP are not implemented",
        reference="paper formulas",
    ),
    _p(
        "monna",
        "Robust Collaborative Learning with Linear Gradient Overhead",
        "2209.10931",
        "distributed",
        "thrifty.distributed.monna:MoNNA",
        methods=("nna",),
        status="implemented",
        note="all-to-all over one all_gather per step; NNA and baselines in thrifty.distributed.aggregators, "
        "attacks and simulated Byzantine peers in thrifty.distributed.byzantine",
        reference="paper formulas",
    ),
    _p(
        "seq_parallel",
        "Sequence Parallelism: Long Sequence Training from System Perspective",
        "2105.13120",
        "distributed",
        "thrifty.distributed.seq_parallel:RingSelfAttention",
        methods=("ring_self_attention",),
        status="implemented",
        note="default: ring passes of key/value chunks with an online log-sum-exp softmax (per-rank memory "
        "O((N/P)^2)); the paper's RSA (RingQK / RingAV, O(N^2/P)) as algorithm='rsa'; contiguous chunks, no zigzag",
        reference="paper formulas",
    ),
    _p(
        "sgc",
        "Sequential Gradient Coding For Straggler Mitigation",
        "2211.13802",
        "distributed",
        "thrifty.distributed.sgc:SequentialGradientCoder",
        methods=("msgc", "gradient_coding"),
        status="implemented",
        note="GC, SR-SGC and M-SGC with the (B, W, lambda) bursty model; simulator for large n and coded training "
        "on gloo processes with injected delays",
        reference="paper formulas",
    ),
    # compress
    _p(
        "meal_v2",
        "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on ImageNet without Tricks",
        "2009.08453",
        "compress",
        "thrifty.compress.distill.meal_v2:MEALv2Distiller",
    ),
    _p(
        "mos_lora",
        "MoS: Unleashing Parameter Efficiency of Low-Rank Adaptation with Mixture of Shards",
        "2410.00938",
        "compress",
        "thrifty.compress.lowrank.mos_lora:MoSLoRA",
    ),
    _p(
        "sparse_model_soups",
        "Sparse Model Soups: A Recipe for Improved Pruning via Model Averaging",
        "2306.16788",
        "compress",
        "thrifty.compress.prune.sparse_model_soups:SparseModelSoup",
    ),
    _p(
        "squeezellm",
        "SqueezeLLM: Dense-and-Sparse Quantization",
        "2306.07629",
        "compress",
        "thrifty.compress.quant.squeezellm:SqueezeLLMLinear",
    ),
    _p(
        "wta_crs",
        "Winner-Take-All Column Row Sampling for Memory Efficient Adaptation of Language Model",
        "2305.15265",
        "compress",
        "thrifty.compress.wta_crs:WTACRSLinear",
        methods=("crs",),
        note="saves activation memory in fine-tuning (sampled weight gradient), not model size",
    ),
    # nn
    _p(
        "global_lbl",
        "Demons in the Detail: On Implementing Load Balancing Loss for Training Specialized Mixture-of-Expert Models",
        "2501.11873",
        "nn",
        "thrifty.nn.global_lbl:GlobalLoadBalancingLoss",
        status="implemented",
        note="counts of every micro-batch first, then one all-reduce and the global f (exact global-batch loss); "
        "MoELayer is token-choice top-k without capacity limits",
        reference="paper formulas",
    ),
    _p(
        "layer_norm",
        "Layer Normalization",
        "1607.06450",
        "nn",
        "thrifty.nn.layer_norm:LayerNorm",
        methods=("ln_lstm",),
        note="reference layer checked against torch.nn.LayerNorm, plus an LN-LSTM cell",
    ),
    _p(
        "s4d",
        "On the Parameterization and Initialization of Diagonal State Space Models",
        "2206.11893",
        "nn",
        "thrifty.nn.s4d:S4D",
    ),
    _p(
        "qsd_transformer",
        "Quantized Spike-driven Transformer",
        "2501.13492",
        "nn",
        "thrifty.nn.qsd_transformer:QSDTransformer",
        methods=("ie_lif",),
    ),
    _p(
        "unmix_tns",
        "Un-Mixing Test-Time Normalization Statistics: Combatting Label Temporal Correlation",
        "2401.08328",
        "nn",
        "thrifty.nn.unmix_tns:UnMixTNS2d",
    ),
    _p(
        "sgconv",
        "What Makes Convolutional Models Great on Long Sequence Modeling?",
        "2210.09298",
        "nn",
        "thrifty.nn.sgconv:SGConv",
    ),
    # diffusion
    _p(
        "any_size",
        "Any-Size-Diffusion: Toward Efficient Text-Driven Synthesis for Any-Size HD Images",
        "2308.16582",
        "diffusion",
        "thrifty.diffusion.sampling.any_size:AnySizeDiffusion",
        methods=("fstd", "arad"),
        status="partial",
        note="FSTD tiling (random offsets reset every 4 steps) with fixed and blended-overlap baselines, seam energy; "
        "claim on a Gaussian random field; ARAD (aspect-ratio fine-tuning of a text-to-image model) not implemented",
        reference="paper formulas",
    ),
    _p(
        "autodiffusion",
        "AutoDiffusion: Training-Free Optimization of Time Steps and Architectures for "
        "Automated Diffusion Model Acceleration",
        "2309.10438",
        "diffusion",
        "thrifty.diffusion.sampling.autodiffusion:AutoDiffusionSearch",
        status="implemented",
        note="evolutionary time-step search with FID-proxy fitness (official EA defaults); per-step block skipping "
        "(SkipPlanDenoiser, search_skips) not in the claim",
        reference="paper formulas",
    ),
    _p(
        "boss",
        "Bellman Optimal Step-size Straightening of Flow-Matching Models",
        "2312.16414",
        "diffusion",
        "thrifty.diffusion.sampling.boss:BellmanStepSizes",
        status="implemented",
        note="Bellman DP over a 100-step reference grid and the straightening fine-tune (full, no LoRA)",
        reference="paper formulas",
    ),
    _p(
        "concept_arithmetics",
        "Concept Arithmetics for Circumventing Concept Inhibition in Diffusion Models",
        "2404.13706",
        "diffusion",
        "thrifty.diffusion.safety.concept_arithmetics:ConceptArithmetic",
        note="an attack on concept erasure (safety evaluation), not an efficiency method",
    ),
    _p(
        "disback",
        "Distribution Backtracking Builds A Faster Convergence Trajectory for One-step Diffusion Distillation",
        "2408.15991",
        "diffusion",
        "thrifty.diffusion.distill.disback:DisBack",
    ),
    _p(
        "hyper_sd",
        "Hyper-SD: Trajectory Segmented Consistency Model for Efficient Image Synthesis",
        "2404.13686",
        "diffusion",
        "thrifty.diffusion.distill.hyper_sd:HyperSD",
        methods=("tscd",),
        status="implemented",
        note="TSCD stages 8-4-2-1 with MSE; no adversarial, human-feedback or DMD stage",
        reference="paper formulas",
    ),
    _p(
        "improved_lct",
        "Improved Training Technique for Latent Consistency Models",
        "2502.01441",
        "diffusion",
        "thrifty.diffusion.distill.improved_lct:ImprovedLCT",
        status="implemented",
        note="consistency training (no teacher), grouped with the distillers; code unreleased, c statistic and "
        "diffusion-loss threshold unverified",
        reference="paper formulas",
    ),
    _p(
        "instaflow",
        "InstaFlow: One Step is Enough for High-Quality Diffusion-Based Text-to-Image Generation",
        "2309.06380",
        "diffusion",
        "thrifty.diffusion.distill.instaflow:InstaFlow",
        methods=("reflow",),
        status="implemented",
        reference="paper formulas",
    ),
    _p(
        "koala",
        "KOALA: Self-Attention Matters in Knowledge Distillation of Latent Diffusion Models for "
        "Memory-Efficient and Fast Image Synthesis",
        "2312.04005",
        "diffusion",
        "thrifty.diffusion.distill.koala:KOALADistiller",
    ),
    _p(
        "laptop_diff",
        "LAPTOP-Diff: Layer Pruning and Normalized Distillation for Compressing Diffusion Models",
        "2404.11098",
        "diffusion",
        "thrifty.diffusion.compress.laptop_diff:LaptopDiff",
    ),
    _p(
        "mixdq",
        "MixDQ: Memory-Efficient Few-Step Text-to-Image Diffusion Models with Metric-Decoupled "
        "Mixed Precision Quantization",
        "2405.17873",
        "diffusion",
        "thrifty.diffusion.compress.mixdq:MixDQ",
        note="CPU can only simulate (fake-quant) the bit widths; no speed claims",
    ),
    _p(
        "msd",
        "Multi-student Diffusion Distillation for Better One-step Generators",
        "2410.23274",
        "diffusion",
        "thrifty.diffusion.distill.msd:MultiStudentDistiller",
    ),
    _p(
        "aptp",
        "Not All Prompts Are Made Equal: Prompt-based Pruning of Text-to-Image Diffusion Models",
        "2406.12042",
        "diffusion",
        "thrifty.diffusion.compress.aptp:PromptRouter",
    ),
    _p(
        "scott",
        "SCott: Accelerating Diffusion Models with Stochastic Consistency Distillation",
        "2403.01505",
        "diffusion",
        "thrifty.diffusion.distill.scott:SCott",
        status="implemented",
        note="stochastic teacher = DDIM-eta sub-steps; no adversarial term",
        reference="paper formulas",
    ),
    _p(
        "slimflow",
        "SlimFlow: Training Smaller One-Step Diffusion Models with Rectified Flow",
        "2407.12718",
        "diffusion",
        "thrifty.diffusion.distill.slimflow:SlimFlow",
        status="implemented",
        reference="paper formulas",
    ),
    _p(
        "snoopi",
        "SNOOPI: Supercharged One-step Diffusion Distillation with Proper Guidance",
        "2412.02687",
        "diffusion",
        "thrifty.diffusion.distill.snoopi:SNOOPI",
        methods=("pg_sb", "nasa"),
    ),
    _p(
        "svdquant",
        "SVDQunat: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models",
        "2411.05007",
        "diffusion",
        "thrifty.diffusion.compress.svdquant:SVDQuantLinear",
        note="W4A4 is simulated (fake-quant) on CPU; the title keeps the seed's spelling",
    ),
    # threed
    _p(
        "boostdream",
        "BoostDream: Efficient Refining for High-Quality Text-to-3D Generation from Multi-View Diffusion",
        "2401.16764",
        "threed",
        "thrifty.threed.pipelines.boostdream:BoostDream",
    ),
    _p(
        "dreamcraft3d",
        "DreamCraft3D: Hierarchical 3D Generation with Bootstrapped Diffusion Prior",
        "2310.16818",
        "threed",
        "thrifty.threed.guidance.bootstrapped_sd:BootstrappedScoreDistillation",
        methods=("bootstrapped_sd",),
    ),
    _p(
        "isotropic3d",
        "Isotropic3D: Image-to-3D Generation Based on a Single CLIP Embedding",
        "2403.10395",
        "threed",
        "thrifty.threed.pipelines.isotropic3d:Isotropic3D",
    ),
    _p(
        "phip_g",
        "PhiP-G: Physics-Guided Text-to-3D Compositional Scene Generation",
        "2502.00708",
        "threed",
        "thrifty.threed.pipelines.phip_g:PhysicsLayout",
        note="LLM/VLM agents replaced by a rule-based parser; the physics layout solver is the method",
    ),
    _p(
        "placiddreamer",
        "PlacidDreamer: Advancing Harmony in Text-to-3D Generation",
        "2407.13976",
        "threed",
        "thrifty.threed.guidance.balanced_sd:BalancedScoreDistillation",
        methods=("balanced_sd",),
    ),
    _p(
        "prolificdreamer",
        "ProlificDreamer: High-Fidelity and Diverse Text-to-3D Generation with Variational Score Distillation",
        "2305.16213",
        "threed",
        "thrifty.threed.guidance.vsd:VSDGuidance",
        methods=("vsd",),
    ),
    _p(
        "scaledreamer",
        "ScaleDreamer: Scalable Text-to-3D Synthesis with Asynchronous Score Distillation",
        "2407.02040",
        "threed",
        "thrifty.threed.guidance.asd:AsynchronousScoreDistillation",
        methods=("asd",),
    ),
    _p(
        "stabledreamer",
        "StableDreamer: Taming Noisy Score Distillation Sampling for Text-to-3D",
        "2312.02189",
        "threed",
        "thrifty.threed.pipelines.stabledreamer:StableDreamer",
    ),
    _p(
        "tv3dg",
        "TV-3DG: Mastering Text-to-3D Customized Generation with Visual Prompt",
        "2410.21299",
        "threed",
        "thrifty.threed.guidance.csm:ClassifierScoreMatching",
        methods=("csm",),
    ),
    # serve
    _p(
        "batchllm",
        "BatchLLM: Optimizing Large Batched LLM Inference with Global Prefix Sharing and "
        "Throughput-oriented Token Batching",
        "2412.03594",
        "serve",
        "thrifty.serve.sched.batchllm:BatchLLMScheduler",
        methods=("batchllm_cpu",),
        status="implemented",
        note="prefix tree flattened to one shared level, decode-heavy groups first, projected-KV admission; "
        "claims simulated (A100) and measured on CPU; no fused prefix-shared attention kernel",
        reference="paper formulas",
        reference_note="the engine's logits equal transformers' LlamaForCausalLM; the prefix tree checked by brute force",
    ),
    _p(
        "sarathi",
        "SARATHI: Efficient LLM Inference by Piggybacking Decodes with Chunked Prefills",
        "2308.16369",
        "serve",
        "thrifty.serve.sched.sarathi:SarathiScheduler",
        status="implemented",
        note="one prefill chunk per batch with piggybacked decodes; claim simulated (A6000 cost model)",
        reference="paper formulas",
        reference_note="the engine's logits equal transformers' LlamaForCausalLM; the scheduling rules from the paper",
    ),
    _p(
        "sarathi_serve",
        "Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve",
        "2403.02310",
        "serve",
        "thrifty.serve.sched.sarathi_serve:SarathiServeScheduler",
        methods=("sarathi_serve_cpu",),
        status="implemented",
        note="stall-free token budget, dynamic chunking; claims simulated (A100 capacity) and measured on CPU; "
        "engine and OpenAI-compatible server in thrifty.serve",
        reference="paper formulas",
        reference_note="the engine's logits equal transformers' LlamaForCausalLM; the scheduling rules from the paper",
    ),
    # data
    _p(
        "cda",
        "Dataset Distillation via Curriculum Data Synthesis in Large Data Era",
        "2311.18838",
        "data",
        "thrifty.data.cda:CurriculumDataSynthesis",
        methods=("sre2l",),
    ),
    _p(
        "qdc",
        "Surveying the Effects of Quality, Diversity, and Complexity in Synthetic Data From Large Language Models",
        "2412.02980",
        "data",
        "thrifty.data.qdc:QDCMetrics",
        note="survey: quality/diversity/complexity metric functions and an analogue experiment, no method",
    ),
)

PAPERS: tuple[Paper, ...] = tuple(sorted(_ENTRIES, key=lambda p: (FIELDS.index(p.field), p.title.casefold())))

_BY_NAME: dict[str, Paper] = {name: paper for paper in PAPERS for name in paper.methods}


def get_paper(key_or_method: str) -> Paper:
    """The paper with this key, or the paper one of whose method keys this is."""
    try:
        return _BY_NAME[key_or_method.lower()]
    except KeyError:
        valid = ", ".join(p.key for p in PAPERS)
        raise KeyError(f"unknown paper or method {key_or_method!r}; valid keys: {valid}") from None


def filter_papers(field: str | None = None, status: str | None = None) -> list[Paper]:
    """Papers of one field and/or one status, in catalogue order (``None`` means any)."""
    if field is not None and field not in FIELDS:
        raise ValueError(f"unknown field {field!r}; valid fields: {', '.join(FIELDS)}")
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; valid statuses: {', '.join(STATUSES)}")
    return [p for p in PAPERS if field in (None, p.field) and status in (None, p.status)]
