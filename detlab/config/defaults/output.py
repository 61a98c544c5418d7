"""Run-level defaults: output directory, seed, determinism, trainer extras."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_output_defaults"]


def add_output_defaults(cfg: CN) -> None:
    cfg.OUTPUT_DIR = "./output"  # run folder: checkpoints, logs, metrics, evaluation reports
    cfg.SEED = -1  # -1 = draw a random seed and log it (the drawn seed is saved in config.yaml)
    cfg.CUDNN_BENCHMARK = False  # let cuDNN pick the fastest convolution algorithms (CUDA only)
    # torch.use_deterministic_algorithms (warn-only) and deterministic cuDNN; slower on GPU.
    cfg.DETERMINISTIC = False
    # Version of the config format, bumped when keys change meaning.
    cfg.VERSION = 1

    cfg.TRAINER = CN()
    # Names in HOOK_REGISTRY, appended after the built-in hooks in this order.
    cfg.TRAINER.EXTRA_HOOKS = []
    # Before iteration 0, push one batch through mapper and model and check shapes and a finite
    # loss, failing in one sentence instead of hours later.
    cfg.TRAINER.PREFLIGHT = True
    # Intra-op CPU threads of the training process (torch.set_num_threads); 0 = PyTorch's
    # default. 1 suits small models on few shared cores, where spinning threads stall.
    cfg.TRAINER.CPU_THREADS = 0
