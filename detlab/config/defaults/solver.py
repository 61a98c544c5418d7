"""``SOLVER.*`` defaults: optimizer, schedule, clipping, NaN guard, checkpoints."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_solver_defaults"]


def add_solver_defaults(cfg: CN) -> None:
    cfg.SOLVER = CN()
    cfg.SOLVER.OPTIMIZER = "SGD"  # "SGD" | "AdamW"
    cfg.SOLVER.BASE_LR = 0.01  # learning rate after warmup, before STEPS decays
    cfg.SOLVER.MOMENTUM = 0.9  # SGD momentum
    cfg.SOLVER.NESTEROV = False  # SGD Nesterov momentum
    cfg.SOLVER.ADAMW_BETAS = (0.9, 0.999)  # AdamW (beta1, beta2)
    cfg.SOLVER.WEIGHT_DECAY = 1e-4  # L2 weight decay of conv and linear weights
    # Weight decay of normalisation layers' weights and biases (BN/GN/LN/FrozenBN); 0 = none.
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    # Weight decay of every other bias; None = same as SOLVER.WEIGHT_DECAY, 0.0 = none.
    cfg.SOLVER.WEIGHT_DECAY_BIAS = None
    cfg.SOLVER.MAX_ITER = 90000  # training iterations (optimizer steps)
    cfg.SOLVER.STEPS = (60000, 80000)  # iterations where WarmupMultiStepLR multiplies by GAMMA
    cfg.SOLVER.GAMMA = 0.1  # LR multiplier at each of STEPS
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # or "WarmupCosineLR"
    cfg.SOLVER.COSINE_END_FACTOR = 0.0  # WarmupCosineLR: final LR = BASE_LR * this
    cfg.SOLVER.WARMUP_ITERS = 1000  # iterations of LR warmup from BASE_LR * WARMUP_FACTOR
    cfg.SOLVER.WARMUP_FACTOR = 0.001  # LR multiplier at iteration 0
    cfg.SOLVER.WARMUP_METHOD = "linear"  # "linear" | "constant"
    cfg.SOLVER.IMS_PER_BATCH = 16  # total over all processes, per optimizer micro-step
    # Gradient accumulation: each optimizer step sums this many loader batches, so the
    # effective batch is IMS_PER_BATCH * GRAD_ACCUM_STEPS.
    cfg.SOLVER.GRAD_ACCUM_STEPS = 1
    cfg.SOLVER.CHECKPOINT_PERIOD = 5000  # iterations between periodic checkpoints; 0 = none
    cfg.SOLVER.CHECKPOINT_MAX_KEEP = 3  # periodic checkpoints kept on disk (newest N)
    # model_best.pth is written when this evaluation metric improves ("max" or "min").
    cfg.SOLVER.BEST_CHECKPOINT = CN()
    cfg.SOLVER.BEST_CHECKPOINT.METRIC = "bbox/AP"
    cfg.SOLVER.BEST_CHECKPOINT.MODE = "max"

    cfg.SOLVER.CLIP_GRADIENTS = CN()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False  # clip gradients before each optimizer step
    # "value": clamp each gradient element to [-CLIP_VALUE, CLIP_VALUE];
    # "norm": rescale each parameter's gradient so its norm is <= CLIP_VALUE;
    # "full_model": rescale all gradients together so their global norm is <= CLIP_VALUE.
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    # value: max |grad| per element; norm / full_model: max norm
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the p-norm for norm and full_model clipping

    # Mixed precision: bf16 or fp16 autocast on CUDA (fp16 with a gradient scaler), bf16 on CPU.
    cfg.SOLVER.AMP = CN()
    cfg.SOLVER.AMP.ENABLED = False
    cfg.SOLVER.AMP.DTYPE = "bfloat16"  # "bfloat16" | "float16" (CUDA only)

    # Exponential moving average of the weights, evaluated and saved alongside the model.
    cfg.SOLVER.EMA = CN()
    cfg.SOLVER.EMA.ENABLED = False
    cfg.SOLVER.EMA.DECAY = 0.9998

    # Stop when the validation metric has not improved for PATIENCE evaluations.
    cfg.SOLVER.EARLY_STOPPING = CN()
    cfg.SOLVER.EARLY_STOPPING.ENABLED = False
    cfg.SOLVER.EARLY_STOPPING.METRIC = "bbox/AP"
    cfg.SOLVER.EARLY_STOPPING.MODE = "max"  # "max" | "min"
    cfg.SOLVER.EARLY_STOPPING.PATIENCE = 5  # evaluations without improvement
    cfg.SOLVER.EARLY_STOPPING.MIN_DELTA = 0.0  # smallest change that counts as improvement

    # Non-finite losses or gradients: skip the batch (no optimizer step), count and log it.
    # After MAX_CONSECUTIVE consecutive skips, or more than MAX_SKIP_RATE of the last WINDOW
    # iterations skipped, roll back to the newest healthy checkpoint (see HEALTHY) and multiply
    # the LR by LR_BACKOFF; after MAX_ROLLBACKS rollbacks, stop. Disabled: raise on a
    # non-finite loss (Detectron2's behaviour).
    cfg.SOLVER.NAN_GUARD = CN()
    cfg.SOLVER.NAN_GUARD.ENABLED = True
    cfg.SOLVER.NAN_GUARD.MAX_CONSECUTIVE = 5
    cfg.SOLVER.NAN_GUARD.WINDOW = 100
    cfg.SOLVER.NAN_GUARD.MAX_SKIP_RATE = 0.2
    cfg.SOLVER.NAN_GUARD.LR_BACKOFF = 0.5
    cfg.SOLVER.NAN_GUARD.MAX_ROLLBACKS = 3
    # Switch mixed precision off after a rollback (fp16 overflow is a common cause of NaN);
    # it stays off for the rest of the run, resumes included.
    cfg.SOLVER.NAN_GUARD.AMP_OFF_AFTER_ROLLBACK = False
    # A checkpoint is healthy (a rollback target, kept by rotation until a newer healthy one
    # exists) when its weights are finite, none of the WINDOW iterations before it was
    # skipped, and both their median loss and the last loss are at most MAX_LOSS_RATIO times
    # the lowest such median seen so far in the run. Checkpoints record this under "health".
    cfg.SOLVER.NAN_GUARD.HEALTHY = CN()
    cfg.SOLVER.NAN_GUARD.HEALTHY.WINDOW = 20
    cfg.SOLVER.NAN_GUARD.HEALTHY.MAX_LOSS_RATIO = 10.0
    # Debugging/demonstration: make iterations in ITERS non-finite on purpose. KIND: "loss"
    # (one loss term), "grad" (one parameter's gradient) or "input" (pixels of the first image);
    # VALUE: "nan" | "inf".
    cfg.SOLVER.NAN_GUARD.INJECT = CN()
    cfg.SOLVER.NAN_GUARD.INJECT.ITERS = []
    cfg.SOLVER.NAN_GUARD.INJECT.KIND = "loss"
    cfg.SOLVER.NAN_GUARD.INJECT.VALUE = "nan"
