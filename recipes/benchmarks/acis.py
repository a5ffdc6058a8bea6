"""ACIS: inference images/s at 224 x 224, and peak training memory of AC versus BL at sequence lengths 5, 10, 21.

Speed: `ACISSegmenter.segment` on 224 x 224 uint8 images (preprocessing, resizing and label assembly
included) with the termination unit forced to continue, so every image takes exactly `--steps` actor steps
(21 = the authors' maximum); weights are random unless `--weights` names a Hub folder (trained weights stop
earlier and are faster).

Memory: one training update (forward, backward, optimizer steps) of `ActorCriticModule` on a batch of
synthetic images holding 21 instances each, run in a fresh subprocess per (mode, length). The figure is
the process's peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) during the update minus
the resident size just before it, i.e. the extra memory the update needed (activations kept for backward,
gradients, optimizer state). The paper's claim (Sec. 5.4): AC back-propagates one step and stays flat,
while BL keeps the whole sequence for BPTT and grows with the length.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

LENGTHS = (5, 10, 21)


def add_arguments(parser) -> None:
    parser.add_argument("--config", choices=("embedded", "paper"), default="embedded",
                        help="network widths: the CPU recipe's (default) or the paper's; both at 224 x 224")
    parser.add_argument("--weights", default=None, help="a Hub folder of an acis model (default: random weights)")
    parser.add_argument("--images", type=int, default=10, help="images timed for the speed figure")
    parser.add_argument("--steps", type=int, default=21, help="actor steps per image in the speed figure")
    parser.add_argument("--batch-size", type=int, default=4, help="batch of the memory figure")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-memory", action="store_true")


def config_224(name: str):
    from recipes.acis_cvppp import EMBEDDED_CONFIG
    from zoo.acis.networks import ACISConfig

    base = EMBEDDED_CONFIG if name == "embedded" else ACISConfig.paper_cvppp()
    return ACISConfig.from_dict({**base.to_dict(), "height": 224, "width": 224})


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    result = {"config": args.config, "input": "224x224", "threads": args.threads}
    result.update(inference_speed(args))
    if not args.skip_memory:
        result["memory"] = {
            mode: {str(length): measure_in_subprocess(mode, length, args) for length in args.lengths}
            for mode in ("AC", "BL")
        }
        result["memory_unit"] = "MiB (peak RSS during one training update minus RSS before it)"
    return result


def inference_speed(args) -> dict:
    from zoo.acis.model import ACISSegmenter
    from zoo.hub import load_folder

    if args.weights:
        segmenter = load_folder(args.weights, expected_type="acis")
        forced = False
    else:
        torch.manual_seed(0)
        segmenter = ACISSegmenter.from_config(config_224(args.config), max_steps=args.steps).eval()
        with torch.no_grad():  # never stop: every image costs exactly `steps` actor steps
            segmenter.actor.control[-1].weight.zero_()
            segmenter.actor.control[-1].bias.fill_(10.0)
        forced = True
    images = np.random.default_rng(0).integers(0, 256, (args.images, 224, 224, 3), dtype=np.uint8)
    segmenter.segment(images[0])  # warm-up
    start = time.perf_counter()
    predicted = [len(segmenter.segment(image)[1]) for image in images]
    seconds = time.perf_counter() - start
    return {
        "images_per_s": args.images / seconds,
        "seconds_per_image": seconds / args.images,
        "actor_steps_per_image": args.steps if forced else None,
        "instances_per_image": float(np.mean(predicted)),
        "weights": args.weights or "random (termination forced to continue)",
    }


def measure_in_subprocess(mode: str, length: int, args) -> float:
    code = f"from recipes.benchmarks.acis import update_memory; update_memory({mode!r}, {length}, {args.batch_size}, {args.config!r})"
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=False)
    if output.returncode != 0:
        raise RuntimeError(f"memory measurement {mode} length {length} failed:\n{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])["mib"]


def update_memory(mode: str, length: int, batch_size: int, config_name: str) -> None:
    """Subprocess body: one update of `mode` at `length`, printing {"mib": extra peak RSS}."""
    import resource

    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from zoo.acis.module import ActorCriticModule

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    config = config_224(config_name)
    module = ActorCriticModule(config.to_dict(), mode=mode, critic_warmup=0, critic_iter=1, curriculum=[[0, length]])
    labels = torch.zeros(batch_size, 224, 224, dtype=torch.long)
    for k in range(21):  # 21 blobs, so that a sequence of 21 steps is inside every episode
        row, column = divmod(k, 5)
        labels[:, 8 + 42 * row: 40 + 42 * row, 8 + 43 * column: 40 + 43 * column] = k + 1
    batch = {"image": torch.rand(batch_size, 3, 224, 224), "labels": labels}
    trainer = pl.Trainer(max_steps=-1, max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as handle:
        resident_before = int(handle.read().split()[1]) * page
    trainer.fit(module, DataLoader([batch], batch_size=None))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(json.dumps({"mib": max(0, peak - resident_before) / 2**20}))
