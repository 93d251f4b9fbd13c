"""Choose onnxruntime execution providers deliberately: TensorRT, then CUDA, then CPU.

``onnxruntime-gpu`` lists its GPU providers even on a machine without a GPU, and asking for them there
prints error lines; so a GPU provider is only requested when a CUDA device is actually present (probed
through the driver library, without torch). The providers a session really runs are reported back.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def cuda_device_count() -> int:
    """CUDA devices visible through the driver (0 when there is no driver or no device)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


@dataclass(frozen=True)
class ProviderChoice:
    """What to ask onnxruntime for; ``fp16`` and ``engine_cache`` configure TensorRT."""

    prefer: tuple[str, ...] = ("tensorrt", "cuda", "cpu")
    fp16: bool = False
    engine_cache: str | None = None

    def resolve(self, trt_profile: dict[str, tuple[tuple[int, ...], ...]] | None = None) -> list:
        """Provider entries for ``onnxruntime.InferenceSession``.

        ``trt_profile`` maps each dynamic input to its (min, opt, max) shapes, so TensorRT builds one
        engine for the whole range instead of a new one for each new shape.
        """
        unknown = [name for name in self.prefer if name not in PROVIDER_NAMES]
        if unknown:
            raise ValueError(f"unknown providers {unknown}; choose from {', '.join(PROVIDER_NAMES)}")
        available = set(ort.get_available_providers())
        has_gpu = cuda_device_count() > 0
        providers: list = []
        for name in self.prefer:
            full = PROVIDER_NAMES[name]
            if full not in available or (name != "cpu" and not has_gpu):
                continue
            if name == "tensorrt":
                options = {"trt_fp16_enable": self.fp16}
                if self.engine_cache:
                    Path(self.engine_cache).mkdir(parents=True, exist_ok=True)
                    options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": self.engine_cache}
                if trt_profile:
                    for i, bound in enumerate(("min", "opt", "max")):
                        shapes = ",".join(f"{n}:{'x'.join(map(str, s[i]))}" for n, s in trt_profile.items())
                        options[f"trt_profile_{bound}_shapes"] = shapes
                providers.append((full, options))
            else:
                providers.append(full)
        if "CPUExecutionProvider" not in [p if isinstance(p, str) else p[0] for p in providers]:
            providers.append("CPUExecutionProvider")  # always a fallback for nodes a GPU provider cannot take
        return providers


def make_session(
    path: str | Path,
    choice: ProviderChoice | None = None,
    *,
    threads: int | None = None,
    trt_profile: dict[str, tuple[tuple[int, ...], ...]] | None = None,
) -> ort.InferenceSession:
    """An inference session on the best available providers; ``session.get_providers()`` says which run.

    ``threads`` caps onnxruntime's intra-op threads (None: one per core). Small batch-1 steps run fastest
    on one thread: splitting a node of a few thousand multiply-adds costs more than it saves.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about providers we deliberately skipped
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = (choice or ProviderChoice()).resolve(trt_profile)
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)
