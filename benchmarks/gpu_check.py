"""What only a GPU can tell, in at most ~10 minutes on one CUDA GPU with the offline copy: one line per check,
its figure and PASS or FAIL.

  precision   the precision `auto` picks for this GPU (T4, 7.5: fp16 + GradScaler; 8.0 and newer: bf16)
  syncs       host synchronisations per training batch (torch.cuda.set_sync_debug_mode), 48 batches of 128
  cli-*       2 epochs of the command line in the chosen precision and in forced fp16 (Colab's T4 path on any
              GPU): finite losses, fp16 steps skipped, images per second
  notebook    S11_ResNet18.ipynb with S11_EPOCHS=2 and the full heatmap checks: rc 0, its figures, peak GPU memory
  resume-cpu  the chosen precision's GPU checkpoint resumed with --device cpu: "finished", the report drawn
  ddp         with two or more GPUs, 1 epoch of the command line under torchrun on 1 and on 2 GPUs: img/s of each
              (the scaling); with one GPU, two processes sharing it over gloo: the CUDA path of DDP

    python benchmarks/gpu_check.py --data-dir DATA_DIR --out OUT_DIR
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from PyTorch_Vision.config import TrainConfig  # noqa: E402
from PyTorch_Vision.data import load_cifar10  # noqa: E402
from PyTorch_Vision.history import EpochLog  # noqa: E402
from PyTorch_Vision.models import ResNet18  # noqa: E402
from PyTorch_Vision.train import CHECK_EVERY, make_trainer, train_one_epoch  # noqa: E402
from PyTorch_Vision.utils import choose_precision  # noqa: E402

T4_MEMORY = 15 * 2**30  # what a T4 offers; the notebook must fit it with room


def line(name: str, ok: bool, figure: str) -> bool:
    print(f"{name:<11} {'PASS' if ok else 'FAIL'}  {figure}", flush=True)
    return ok


def check_precision() -> tuple[bool, str]:
    major, minor = torch.cuda.get_device_capability()
    chosen = choose_precision("cuda")[0]
    expected = "bf16" if major >= 8 else "fp16" if major >= 7 else "fp32"
    return line("precision", chosen == expected, f"{chosen} on compute capability {major}.{minor} "
                f"({torch.cuda.get_device_name()})"), chosen


def check_syncs(data_dir: str, precision: str, batches: int = 48) -> bool:
    """Host syncs per batch of training: at most one every check, plus GradScaler's own one per step in fp16."""
    data = load_cifar10(data_dir, limit_train=128 * batches, limit_test=128)
    config = TrainConfig(epochs=1, bn_stats_images=0, precision=precision)
    torch.manual_seed(0)
    trainer = make_trainer(ResNet18(), data, config, "cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_one_epoch(trainer, 1, EpochLog("none", 1))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    allowed = math.ceil(batches / CHECK_EVERY) + batches * (precision == "fp16")
    return line("syncs", syncs <= allowed, f"{syncs / batches:.3f} per batch in {precision} ({syncs} in {batches} "
                f"batches; at most {allowed}: one a check every {CHECK_EVERY}"
                + (", and GradScaler's one a step" if precision == "fp16" else "") + ")")


def run_cli(name: str, args: list[str], out: Path) -> subprocess.CompletedProcess:
    log = out / f"{name}.log"
    with open(log, "w") as f:
        return subprocess.run([sys.executable, "-m", "PyTorch_Vision", "train", *args], cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT)


def check_cli(name: str, data_dir: str, out: Path, precision: str) -> bool:
    folder = out / name
    done = run_cli(name, ["--data-dir", data_dir, "--epochs", "2", "--precision", precision, "--out", str(folder),
                          "--progress", "epoch"], out)
    if done.returncode != 0:
        return line(name, False, f"rc {done.returncode}: see {out / name}.log")
    h = json.loads((folder / "history.json").read_text())
    finite = all(math.isfinite(v) for v in h["train_loss"] + h["test_loss"])
    rate = 2 * 50_000 / sum(h["epoch_seconds"])
    return line(name, finite, f"{precision}: test acc {h['test_acc'][-1]:.2f}%, losses finite: {finite}, fp16 "
                f"steps skipped {sum(h['skipped_steps'])}, {rate:.0f} img/s (training and evaluation)")


def check_notebook(data_dir: str, out: Path) -> bool:
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "S11_ResNet18.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import torch; print('PEAK', torch.cuda.max_memory_allocated())"))
    plots = out / "notebook_plots"
    os.environ.update(S11_DATA_DIR=data_dir, S11_OUT_DIR=str(out / "notebook_run"), S11_PLOTS_DIR=str(plots),
                      S11_PROGRESS="epoch", S11_EPOCHS="2")
    try:
        nbclient.NotebookClient(nb, timeout=None, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT)}}).execute()
    except Exception as e:  # a failing cell: its error, in one line
        return line("notebook", False, f"{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}")
    finally:
        nbformat.write(nb, out / "S11_ResNet18.ipynb")
    peak = int(next(o["text"] for o in nb.cells[-1].outputs if "PEAK" in o.get("text", "")).split()[-1])
    figures = sorted(p.name for p in plots.glob("*.png"))
    return line("notebook", peak < 0.8 * T4_MEMORY and len(figures) > 0,
                f"rc 0, {len(figures)} figures ({', '.join(figures)}), peak GPU memory {peak / 2**30:.2f} GiB "
                f"(a T4 has 15)")


def check_resume_on_cpu(name: str, data_dir: str, out: Path) -> bool:
    done = run_cli("resume-cpu", ["--data-dir", data_dir, "--epochs", "2", "--out", str(out / name), "--resume",
                                  "--device", "cpu", "--progress", "epoch"], out)
    text = (out / "resume-cpu.log").read_text()
    ok = done.returncode == 0 and "finished" in text and (out / name / "confusion_matrix.png").exists()
    return line("resume-cpu", ok, f"rc {done.returncode}, 'finished' said: {'finished' in text}, report drawn: "
                f"{(out / name / 'confusion_matrix.png').exists()}")


def ddp_worker(data_dir: str, out: str) -> None:
    """One of two torchrun processes sharing GPU 0 over gloo (NCCL needs a GPU each): 1 epoch of 5,120 images."""
    import torch.distributed as dist

    from PyTorch_Vision.train import fit

    dist.init_process_group("gloo")
    torch.manual_seed(0)
    fit(ResNet18(), load_cifar10(data_dir, limit_train=5120, limit_test=1000), TrainConfig(epochs=1), "cuda:0",
        out, progress="epoch")
    dist.destroy_process_group()


def check_ddp(data_dir: str, out: Path) -> bool:
    gpus = torch.cuda.device_count()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    if gpus < 2:
        command = [*torchrun, "--nproc-per-node=2", str(Path(__file__).resolve()), "--data-dir", data_dir, "--out",
                   str(out / "ddp-gloo"), "--ddp-worker"]
        with open(out / "ddp-gloo.log", "w") as f:
            done = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        history = out / "ddp-gloo" / "history.json"
        ok = done.returncode == 0 and json.loads(history.read_text())["run"]["processes"] == 2
        return line("ddp", ok, f"rc {done.returncode}: 2 processes on 1 GPU over gloo, one history: {ok}")
    rates = {}
    for n in (1, 2):
        folder = out / f"ddp-{n}gpu"
        with open(out / f"ddp-{n}gpu.log", "w") as f:
            done = subprocess.run([*torchrun, f"--nproc-per-node={n}", "-m", "PyTorch_Vision", "train", "--data-dir",
                                   data_dir, "--epochs", "1", "--out", str(folder), "--progress", "epoch"], cwd=ROOT,
                                  stdout=f, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            return line("ddp", False, f"rc {done.returncode} on {n} GPUs: see {out}/ddp-{n}gpu.log")
        rates[n] = 50_000 / json.loads((folder / "history.json").read_text())["epoch_seconds"][0]
    return line("ddp", True, f"1 GPU {rates[1]:.0f} img/s, 2 GPUs {rates[2]:.0f} img/s ({rates[2] / rates[1]:.2f}x; "
                f"training and evaluation, 1 epoch each) of {gpus} GPUs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the CIFAR-10 copy (ImageFolder train/ and test/)")
    parser.add_argument("--out", required=True, help="folder for the runs and logs")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)  # what check_ddp starts
    args = parser.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.data_dir, args.out)
        return 0
    if not Path(args.data_dir).is_dir():
        print(f"error: --data-dir {args.data_dir} is not a folder: give the CIFAR-10 copy's folder", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("no CUDA GPU here (torch.cuda.is_available() is False): this check is for a GPU; nothing was run")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ok, chosen = check_precision()
    results = [ok, check_syncs(args.data_dir, chosen),
               check_cli("cli-" + chosen, args.data_dir, out, chosen)]
    if chosen != "fp16":
        results.append(check_cli("cli-fp16", args.data_dir, out, "fp16"))
    results += [check_notebook(args.data_dir, out), check_resume_on_cpu("cli-" + chosen, args.data_dir, out),
                check_ddp(args.data_dir, out)]
    print(f"{sum(results)} of {len(results)} checks passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
