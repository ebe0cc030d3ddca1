"""The device a command runs on: what the installed Caffe was built with, which GPUs
answer, the one choice of device (--gpu N / --cpu) and what is recorded of it, and
a GPU's free memory."""
import ctypes
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import caffe

from fcn.errors import UserError


def build_info():
    """What the installed Caffe was built with: caffe/fcn_build.json, written by
    third_party/caffe/build.sh ({"cuda": false} for builds older than that file)."""
    try:
        return json.loads((Path(caffe.__file__).parent / "fcn_build.json").read_text())
    except (OSError, ValueError):
        return {"cuda": False}


def visible_gpus():
    """Names of the NVIDIA GPUs that answer (nvidia-smi), in CUDA's order."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [l.strip() for l in out.stdout.splitlines() if l.strip()] if out.returncode == 0 else []


@dataclass(frozen=True)
class Device:
    """Where a command runs: the CPU, or GPU ``gpu`` (``name`` as nvidia-smi says).
    ``why`` says why the CPU ("--cpu", "no GPU answers"; "" on a CPU build)."""
    kind: str
    gpu: Optional[int] = None
    name: str = ""
    why: str = ""

    @property
    def is_gpu(self):
        return self.kind == "GPU"

    def __str__(self):
        """The line every command prints first: 'device: GPU 0 (NVIDIA H200)'."""
        if self.is_gpu:
            return f"device: GPU {self.gpu} ({self.name})"
        return "device: CPU" + (f" ({self.why})" if self.why else "")

    @property
    def short(self):
        """'GPU 0' or 'CPU': a key for timings per device."""
        return f"GPU {self.gpu}" if self.is_gpu else "CPU"

    def record(self):
        """What goes into the files a command writes."""
        info = build_info()
        return {"kind": self.kind, "gpu": self.gpu, "name": self.name or None,
                "caffe_cuda": bool(info.get("cuda")), "caffe_cudnn": bool(info.get("cudnn"))}


def use_device(gpu=None, cpu=False):
    """Put Caffe on the device a command runs on and return it (a Device): --cpu the
    CPU; --gpu N that GPU (refused in one line on a CPU build or when there is no GPU N;
    asking Caffe would abort the process); else GPU 0 when the build has CUDA and a GPU
    answers, the CPU otherwise."""
    if gpu is not None and cpu:
        raise UserError(f"--gpu {gpu} and --cpu: give one of them")
    cuda = bool(build_info().get("cuda"))
    gpus = visible_gpus() if cuda and not cpu else []
    if gpu is not None:
        if not cuda:
            raise UserError(f"--gpu {gpu}: this Caffe is built CPU-only; run without --gpu, "
                            "or build for CUDA with 'FCN_GPU=1 make setup' (README: GPU)")
        if not 0 <= gpu < len(gpus):
            raise UserError(f"--gpu {gpu}: {len(gpus)} GPU(s) answer here"
                            + (f" (ids 0..{len(gpus) - 1})" if gpus else "; run with --cpu"))
    elif gpus:
        gpu = 0
    if gpu is None:
        caffe.set_mode_cpu()
        return Device("CPU", why="--cpu" if cpu else "" if not cuda else "no GPU answers")
    caffe.set_device(gpu)
    caffe.set_mode_gpu()
    return Device("GPU", gpu, gpus[gpu])


def gpu_free_bytes(device):
    """Free memory of the device's GPU: cudaMemGetInfo through the CUDA runtime Caffe
    loaded (the current device), else nvidia-smi's figure; None if neither answers."""
    for name in ("libcudart.so.13", "libcudart.so"):
        try:
            cudart = ctypes.CDLL(name)
        except OSError:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if cudart.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) == 0:
            return free.value
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,"
                              "nounits", "-i", str(device.gpu)], capture_output=True, text=True,
                             timeout=30)
        return int(out.stdout.split()[0]) * 2 ** 20 if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None




def cpu_name():
    """The CPU as /proc/cpuinfo names it, with its family/model (a VM's "AMD EPYC" alone
    does not tell Zen 1 from Zen 3) and its widest vector unit."""
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor()
    flags = info.get("flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (f"{info.get('model name', platform.processor())} "
            f"(family {info.get('cpu family', '?')} model {info.get('model', '?')}, {isa})")


def machine_name(device):
    """What a timing on ``device`` was measured on: the GPU's name, or the CPU with
    the threads it had."""
    if device.is_gpu:
        return device.name
    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count())
    return f"{cpu_name()}, {threads} threads"
