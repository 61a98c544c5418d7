"""detlab YOLO against Ultralytics YOLOv8n: equal CPU wall-clock training, scored by pycocotools.

Both train from scratch (no pretrained weights) on the built-in synthetic SAR ships
(``sar_ships_synth_train``, 1000 chips; scored on ``sar_ships_synth_val``, 200 chips), one
after the other, each for the same wall-clock budget of its training loop. Their predictions
on the validation chips (score >= 0.001, NMS IoU 0.7, <= 100 per image) are written as COCO
results and scored with pycocotools' ``COCOeval`` against the same ground-truth json:
AP, AP50, APs. Also reported: iterations, s/iter, images seen, peak RSS of the training
process, whole-run wall time and the machine's load average.

**What each gets.** The chips are 16-bit single-channel amplitude. detlab's ``ShipSARMapper``
converts each to dB and stretches the 1st..99.8th percentile to 256 grey levels
(``INPUT.SAR.EIGHT_BIT``). Ultralytics reads 8-bit images: the ``prepare`` step writes every
chip through the same function (:func:`detlab.data.transforms.sar_to_unit`, same
percentiles, 8-bit) as a 3-channel PNG (the grey level repeated) with YOLO txt labels. Both
therefore see the same 256 grey levels; detlab reads one channel, YOLOv8n three copies.

**Ultralytics** (installed only in its own virtual environment, never a detlab dependency)
runs there as a subprocess: ``YOLO("yolov8n.yaml")`` (architecture from the packaged yaml,
random init), ``pretrained=False``, ``amp=False``, ``plots=False``, ``val=False``, its ``time``
budget, its default recipe otherwise (batch 16, SGD/AdamW "auto", mosaic closed for the last
10 epochs, EMA), ``imgsz=256``, 1 data worker. ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=false``
and a private ``YOLO_CONFIG_DIR`` keep it offline; every outgoing connection attempt is
blocked and listed in the results (``network_attempts``). The one lookup it made (its
dataset check probing a font download URL, ``check_font``) is prevented by a stand-in font in
its config folder.

**detlab** trains ``configs/yolo/yolo_n_sar_ships_cpu.yaml``. The run first times 8
iterations of the real pipeline, then sets ``SOLVER.MAX_ITER`` (and the mosaic closing) so the
schedule ends at the budget; a hook stops it at the budget in any case. Its EMA weights are
scored, as Ultralytics' saved (EMA) weights are.

``step`` mode times the train step at batch 8, 320², 3 channels, 80 classes (random images,
8 boxes each) of detlab's YOLO n-scale config and Ultralytics' YOLOv8n (same architecture),
interleaved in one process, and counts both models' FLOPs with fvcore (a multiply-add = 2
FLOPs, the convention of Ultralytics' "GFLOPs").

The Ultralytics environment used for the figures in ``docs/benchmarks.md`` (it reuses the
main environment's torch and OpenCV, so ``opencv-python`` is never installed anywhere)::

    python -m venv /work/venvs/ultralytics
    python -c "import site; print(site.getsitepackages()[0])" \
        > /work/venvs/ultralytics/lib/python3.11/site-packages/_base_env.pth
    /work/venvs/ultralytics/bin/pip install --no-deps ultralytics==8.4.190 polars psutil \
        ultralytics-thop nvidia-ml-py ultralytics-platform

Usage (from the repository root)::

    python benchmarks/vs_ultralytics.py all --budget 600 --ultralytics-python \
        /work/venvs/ultralytics/bin/python --out /tmp/vs_ul
    /work/venvs/ultralytics/bin/python benchmarks/vs_ultralytics.py step --iters 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DETLAB_CONFIG = os.path.join(ROOT, "configs", "yolo", "yolo_n_sar_ships_cpu.yaml")
TRAIN, VAL = "sar_ships_synth_train", "sar_ships_synth_val"
CONF, IOU, MAX_DET = 0.001, 0.7, 100


def _machine() -> str:
    """CPU model and core count (from /proc/cpuinfo where there is one)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(x.split(":", 1)[1].strip() for x in f if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} CPUs, torch threads 1"


def _load() -> tuple | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child, MB."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale,
    }


# ----------------------------------------------------------------------------- prepare
def prepare(out: str) -> dict:
    """Write both splits as a YOLO folder (8-bit 3-channel PNG after the dB stretch)."""
    import cv2
    import numpy as np

    from detlab.data import DatasetCatalog, MetadataCatalog
    from detlab.data.transforms import read_image, sar_to_unit

    root = os.path.join(out, "yolo_sar_ships")
    done = os.path.join(root, "data.yaml")
    if os.path.isfile(done):
        return {"data_yaml": done, "gt_json": MetadataCatalog.get(VAL).json_file}
    for split, name in (("train", TRAIN), ("val", VAL)):
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
        os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
        for d in DatasetCatalog.get(name):
            img = sar_to_unit(read_image(d["file_name"]), "db", (1.0, 99.8), eight_bit=True)
            stem = f"{int(d['image_id']):06d}"
            cv2.imwrite(os.path.join(root, "images", split, stem + ".png"), np.repeat(img, 3, 2))
            h, w = d["height"], d["width"]
            lines = [
                f"{a['category_id']} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} "
                f"{bw / w:.6f} {bh / h:.6f}"
                for a in d["annotations"]
                for x, y, bw, bh in [a["bbox"]]
            ]
            with open(os.path.join(root, "labels", split, stem + ".txt"), "w") as f:
                f.write("\n".join(lines) + ("\n" if lines else ""))
    with open(done, "w") as f:
        f.write(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: ship\n")
    return {"data_yaml": done, "gt_json": MetadataCatalog.get(VAL).json_file}


# ----------------------------------------------------------------------------- detlab
def train_detlab(budget: float, out: str, calib_iters: int = 8) -> dict:
    """Train the detlab quick config for ``budget`` seconds; write COCO results for VAL."""
    import torch

    from detlab.config import load_config
    from detlab.engine import Trainer
    from detlab.engine.hooks import HookBase

    t_start = time.time()

    def cfg_with(max_iter: int, out_dir: str):
        cfg = load_config(DETLAB_CONFIG)
        cfg.defrost()
        cfg.OUTPUT_DIR = out_dir
        cfg.DATASETS.TEST = ()  # scored below, once, on the EMA weights
        cfg.SOLVER.MAX_ITER = int(max_iter)
        cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max(1, max_iter // 10))
        cfg.INPUT.MOSAIC.CLOSE_ITERS = max(1, int(0.15 * max_iter))
        cfg.SOLVER.CHECKPOINT_PERIOD = 0
        cfg.SOLVER.NAN_GUARD.ENABLED = True
        cfg.LOGGING.TENSORBOARD = False
        cfg.freeze()
        return cfg

    class Stop(HookBase):
        def __init__(self, deadline: float) -> None:
            self.deadline = deadline

        def after_step(self) -> None:
            if time.time() >= self.deadline:
                self.trainer.request_stop("time budget reached")

    torch.set_num_threads(1)
    # calibration: the real pipeline for a few iterations (counted in the budget)
    cal = Trainer(cfg_with(10_000, os.path.join(out, "detlab_calibration")))
    cal.register_hooks([Stop(time.time() + 10_000)])
    it = iter(cal.build_train_loader(cal.cfg))
    cal._data_iter = it
    from detlab.utils.events import EventStorage

    with EventStorage(0):
        for i in range(2):
            cal.iter = i
            cal.run_step()
        t0 = time.time()
        for i in range(2, 2 + calib_iters):
            cal.iter = i
            cal.run_step()
    s_iter = (time.time() - t0) / calib_iters
    del cal, it
    remaining = budget - (time.time() - t_start)
    max_iter = max(50, int(0.97 * remaining / s_iter))
    cfg = cfg_with(max_iter, os.path.join(out, "detlab_run"))
    trainer = Trainer(cfg)
    trainer.register_hooks([Stop(t_start + budget)])
    t_train = time.time()
    trainer.train()
    train_end = time.time()
    iters = trainer.iter + 1
    model = trainer.ema.module if trainer.ema is not None else trainer.model
    results = predict_detlab(cfg, model, os.path.join(out, "detlab_predictions.json"))
    return {
        "calibration_s_per_iter": s_iter,
        "planned_iters": max_iter,
        "iters": iters,
        "batch": cfg.SOLVER.IMS_PER_BATCH,
        "images_seen": iters * cfg.SOLVER.IMS_PER_BATCH,
        "train_loop_s": train_end - t_train,
        "budget_used_s": train_end - t_start,
        "s_per_iter": (train_end - t_train) / max(iters, 1),
        "predictions": results,
        "peak_rss_mb": _peak_rss_mb(),
        "params": sum(p.numel() for p in model.parameters()),
    }


def predict_detlab(cfg, model, path: str) -> str:
    import torch

    from detlab.data import MetadataCatalog, build_detection_test_loader

    id_map = MetadataCatalog.get(VAL).thing_contiguous_id_to_dataset_id
    model.eval()
    records = []
    with torch.no_grad():
        for batch in build_detection_test_loader(cfg, VAL):
            for x, out in zip(batch, model(batch), strict=True):
                inst = out["instances"]
                for b, s, c in zip(inst.boxes.tolist(), inst.scores.tolist(),
                                   inst.classes.tolist(), strict=True):  # fmt: skip
                    records.append({
                        "image_id": x["image_id"], "category_id": id_map[int(c)],
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s,
                    })  # fmt: skip
    with open(path, "w") as f:
        json.dump(records, f)
    return path


# ----------------------------------------------------------------------------- ultralytics
def _caller() -> str:
    """The innermost ultralytics frame of the current stack (where a connection came from)."""
    import traceback

    frames = [f for f in traceback.extract_stack() if "site-packages/ultralytics" in f.filename]
    return f" from {frames[-1].filename.split('site-packages/')[-1]}:{frames[-1].lineno}" if (
        frames) else ""  # fmt: skip


def _block_network(log: list) -> None:
    """Refuse every outgoing connection except to local sockets; remember the attempts."""
    import socket

    real_connect = socket.socket.connect

    def connect(self, address):  # noqa: ANN001
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        log.append(f"{address}{_caller()}")
        raise OSError("network access blocked by the benchmark")

    socket.socket.connect = connect
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001
        if host not in ("localhost", "127.0.0.1", "::1", None):
            log.append(f"dns:{host}{_caller()}")
            raise socket.gaierror("name resolution blocked by the benchmark")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def _ultralytics_env(out: str) -> None:
    """Offline settings. Its dataset check looks for ``Arial.ttf`` in its config folder and
    otherwise probes a download URL (``check_font``); plots are off, so matplotlib's own
    DejaVu Sans stands in under that name and nothing is looked up."""
    import shutil

    import matplotlib

    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ["YOLO_CONFIG_DIR"] = os.path.join(out, "ultralytics_config")
    fonts = os.path.join(os.environ["YOLO_CONFIG_DIR"], "Ultralytics")
    os.makedirs(fonts, exist_ok=True)
    dejavu = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not os.path.isfile(os.path.join(fonts, name)):
            shutil.copyfile(dejavu, os.path.join(fonts, name))


def train_ultralytics(budget: float, out: str, data_yaml: str, gt_json: str) -> dict:
    """Run inside the Ultralytics environment: train YOLOv8n for ``budget`` seconds."""
    attempts: list[str] = []
    _ultralytics_env(out)
    _block_network(attempts)
    t_start = time.time()
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(1)
    model = YOLO("yolov8n.yaml")
    batches = {"n": 0, "first": None, "last": None}

    def on_batch_end(trainer) -> None:  # noqa: ANN001
        batches["n"] += 1
        batches["last"] = time.time()
        if batches["first"] is None:
            batches["first"] = time.time()

    model.add_callback("on_train_batch_end", on_batch_end)
    t_train = time.time()
    model.train(
        data=data_yaml,
        time=budget / 3600.0,
        epochs=1000,
        imgsz=256,
        device="cpu",
        workers=1,
        pretrained=False,
        amp=False,
        plots=False,
        val=False,
        project=os.path.join(out, "ultralytics_runs"),
        name="yolov8n",
        exist_ok=True,
        seed=0,
        verbose=False,
    )
    train_end = time.time()
    weights = os.path.join(out, "ultralytics_runs", "yolov8n", "weights", "last.pt")
    trained = YOLO(weights)
    with open(gt_json) as f:
        gt = json.load(f)
    images = os.path.join(os.path.dirname(data_yaml), "images", "val")
    records = []
    for im in gt["images"]:
        path = os.path.join(images, f"{int(im['id']):06d}.png")
        res = trained.predict(
            path, imgsz=256, conf=CONF, iou=IOU, max_det=MAX_DET, device="cpu", verbose=False
        )[0]
        boxes = res.boxes
        for b, s, c in zip(
            boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
        ):
            xywh = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
            records.append(
                {"image_id": im["id"], "category_id": int(c) + 1, "bbox": xywh, "score": s}
            )
    pred = os.path.join(out, "ultralytics_predictions.json")
    with open(pred, "w") as f:
        json.dump(records, f)
    n = batches["n"]
    return {
        "iters": n,
        "batch": 16,
        "images_seen": n * 16,
        "train_loop_s": train_end - t_train,
        "budget_used_s": train_end - t_start,
        "s_per_iter": (batches["last"] - batches["first"]) / max(n - 1, 1) if n > 1 else None,
        "predictions": pred,
        "peak_rss_mb": _peak_rss_mb(),
        "params": sum(p.numel() for p in trained.model.parameters()),
        "network_attempts": attempts,
    }


# ----------------------------------------------------------------------------- scoring
def score(gt_json: str, pred_json: str) -> dict:
    """AP, AP50, APs (percent) with pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        with open(pred_json) as f:
            preds = json.load(f)
        dt = gt.loadRes(preds) if preds else None
        if dt is None:
            return {"AP": 0.0, "AP50": 0.0, "APs": 0.0, "detections": 0}
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return {"AP": 100 * s[0], "AP50": 100 * s[1], "APs": 100 * s[3], "detections": len(preds)}


def _subprocess(python: str, args: list[str], env: dict | None = None) -> dict:
    t0 = time.time()
    proc = subprocess.run(
        [python, os.path.abspath(__file__), *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{args[0]} failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.time() - t0
    return result


def run_all(args: argparse.Namespace) -> dict:
    os.makedirs(args.out, exist_ok=True)
    info = prepare(args.out)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "budget_s": args.budget,
        "load_before": _load(),
    }
    order = ["detlab", "ultralytics"] if not args.ultralytics_first else ["ultralytics", "detlab"]
    for who in order:
        common = ["--budget", str(args.budget), "--out", args.out]
        if who == "detlab":
            r = _subprocess(sys.executable, ["train-detlab", *common], env)
        else:
            r = _subprocess(
                args.ultralytics_python,
                ["train-ultralytics", *common, "--data", info["data_yaml"], "--gt",
                 info["gt_json"]],
                env,
            )  # fmt: skip
        r["load_after"] = _load()
        r["scores"] = score(info["gt_json"], r["predictions"])
        report[who] = r
    d, u = report["detlab"]["scores"], report["ultralytics"]["scores"]
    report["AP_ratio"] = d["AP"] / u["AP"] if u["AP"] > 0 else float("inf")
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


# ----------------------------------------------------------------------------- step
def step_benchmark(args: argparse.Namespace) -> dict:
    """Train step, batch 8, 320², of detlab YOLO-n and Ultralytics YOLOv8n (same process)."""
    import statistics

    import torch

    _ultralytics_env(args.out)
    _block_network([])
    from fvcore.nn import FlopCountAnalysis
    from ultralytics.cfg import get_cfg as ul_cfg
    from ultralytics.nn.tasks import DetectionModel

    from detlab.config import load_config
    from detlab.modeling import build_model
    from detlab.structures import Instances

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_step import step_detlab  # the same step as benchmarks/train_step.py

    torch.set_num_threads(args.threads)
    b, size, nb = args.batch, args.size, 8
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(b, 3, size, size, generator=g) * 255
    xy = torch.rand(b, nb, 2, generator=g) * (size - 64)
    wh = 8 + torch.rand(b, nb, 2, generator=g) * 56
    boxes = torch.cat([xy, xy + wh], -1)
    classes = torch.randint(0, 80, (b, nb), generator=g)
    inputs = [
        {"image": imgs[i], "instances": Instances((size, size), boxes=boxes[i],
         classes=classes[i]), "height": size, "width": size, "image_id": i}
        for i in range(b)
    ]  # fmt: skip
    cxcywh = torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)
    ul_batch = {
        "img": imgs / 255,
        "batch_idx": torch.arange(b).repeat_interleave(nb).float(),
        "cls": classes.reshape(-1, 1).float(),
        "bboxes": (cxcywh / size).reshape(-1, 4),
    }

    results = {}
    torch.manual_seed(0)
    cfg = load_config(os.path.join(ROOT, "configs", "yolo", "yolo_n.yaml"))
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    models = {}
    for cl in (False, True):
        cfg.MODEL.CHANNELS_LAST = cl
        models[f"detlab{' channels_last' if cl else ''}"] = build_model(cfg).train()
    torch.manual_seed(0)
    ul = DetectionModel("yolov8n.yaml", nc=80, verbose=False)
    ul.args = ul_cfg()
    ul.train()

    def ul_step():
        opt = torch.optim.SGD(ul.parameters(), 0.001, 0.9)

        def step():
            loss, _ = ul.loss(ul_batch)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()

        return step

    # FLOPs of one image's forward through backbone, neck and head convolutions
    x1 = torch.rand(1, 3, size, size)
    det = models["detlab"]

    class Features(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.head.predict(self.model.features(x))

    with torch.no_grad():
        flops = {
            "detlab": FlopCountAnalysis(Features(det.eval()), x1),
            "ultralytics": FlopCountAnalysis(ul.eval(), x1),
        }
        flops = {k: 2 * v.unsupported_ops_warnings(False).total() for k, v in flops.items()}
    det.train()
    ul.train()

    steps = {k: step_detlab(m, inputs) for k, m in models.items()}
    steps["ultralytics"] = ul_step()
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(args.warmup + args.iters):
        for name, fn in steps.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            if i >= args.warmup:
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    for k in steps:
        results[k] = {
            "wall_median_s": statistics.median(wall[k]),
            "wall_min_s": min(wall[k]),
            "cpu_median_s": statistics.median(cpu[k]),
        }
    ref = results["ultralytics"]
    for k in models:
        for stat in ("wall_median_s", "wall_min_s", "cpu_median_s"):
            results[k][f"ratio_{stat}"] = results[k][stat] / ref[stat]
    return {
        "batch": b,
        "size": size,
        "threads": args.threads,
        "gflops_per_image_320": {k: v / 1e9 for k, v in flops.items()},
        "params": {
            "detlab": sum(p.numel() for p in det.parameters()),
            "ultralytics": sum(p.numel() for p in ul.parameters()),
        },
        "machine": _machine(),
        "load": _load(),
        "results": results,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["all", "prepare", "train-detlab", "train-ultralytics", "step"])
    p.add_argument("--budget", type=float, default=600.0, help="training seconds per framework")
    p.add_argument("--out", default="/tmp/vs_ultralytics")
    p.add_argument("--ultralytics-python", default="/work/venvs/ultralytics/bin/python")
    p.add_argument("--ultralytics-first", action="store_true")
    p.add_argument("--data", default="")
    p.add_argument("--gt", default="")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=320)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.mode == "prepare":
        out = prepare(args.out)
    elif args.mode == "train-detlab":
        out = train_detlab(args.budget, args.out)
    elif args.mode == "train-ultralytics":
        out = train_ultralytics(args.budget, args.out, args.data, args.gt)
    elif args.mode == "step":
        out = step_benchmark(args)
    else:
        out = run_all(args)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
