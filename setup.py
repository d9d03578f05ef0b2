"""Builds what this machine's user needs, and no more: a CPU-only build takes a minute on two
cores, the CUDA kernels several (ptxas, per architecture).

fastclip._C holds the CPU kernels, plus the CUDA kernels when a CUDA toolkit and a CUDA build of
torch are present and either a GPU is visible (built for the GPUs present, as torch's
cpp_extension picks them) or TORCH_CUDA_ARCH_LIST names the architectures. FASTCLIP_CUDA=1
requires the CUDA kernels (for DEFAULT_CUDA_ARCH_LIST when neither names the architectures: a
machine without a GPU that builds for others, as CI does); FASTCLIP_CUDA=0 leaves them out.

FASTCLIP_CUDA_ON_CPU=1 also builds fastclip._cuda_on_cpu, the CPU execution layer for the tests
(csrc/simt: the CUDA entry points and kernels compiled by the host compiler, run on CPU tensors
when FASTCLIP_CPU_KERNELS=cuda at import); it needs a CUDA toolkit's headers, no GPU or nvcc run.

A long build says how far it is: on the terminal where there is one (pip hides a build's output
unless -v), else on stderr."""

import glob
import os
import pathlib
import platform
import shutil
import sys
import threading
import time

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# Python's own flags carry -g, which costs about 40% of the compile time of a file that includes
# torch's headers; the kernels are debugged through -lineinfo and the layer's tests.
NO_DEBUG_INFO = "-g0"
# Ampere and Hopper as machine code, plus PTX that newer GPUs compile at load time.
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"


def _is_toolkit(path):
    return (
        bool(path)
        and os.path.isfile(os.path.join(path, "bin", "nvcc"))
        and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))
    )


def find_cuda_home():
    """The real toolkit folder. On some machines `nvcc` on PATH is a wrapper script outside the
    toolkit, so torch's guess (the parent of nvcc's folder) is wrong: look where toolkits live."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    candidates += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        try:  # a wrapper script that execs the real nvcc names it
            with open(nvcc, "rb") as f:
                for token in f.read(4096).decode("utf-8", "replace").split():
                    if token.endswith("/bin/nvcc"):
                        candidates.append(os.path.dirname(os.path.dirname(token)))
        except OSError:
            pass
    return next((c for c in candidates if _is_toolkit(c)), None)


def nvidia_wheel_include_dirs():
    """torch's CUDA headers include cublas_v2.h and cusparse.h, which a bare toolkit may lack; the
    nvidia-* wheels that CUDA torch depends on ship them."""
    dirs = []
    for base in sys.path:
        for inc in glob.glob(os.path.join(base, "nvidia", "*", "include")):
            if os.path.isfile(os.path.join(inc, "cusparse.h")) and inc not in dirs:
                dirs.append(inc)
    return dirs


def forced_switch(name):
    """An environment switch: None when unset or empty, else "0" or "1" (any other value stops the build)."""
    forced = os.environ.get(name) or None
    if forced not in (None, "0", "1"):
        sys.exit(f"{name} must be 0 or 1, got {forced!r}")
    return forced


def gpu_visible():
    """Whether torch sees a GPU: the CUDA kernels are then built for it (torch picks its architectures)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def want_cuda(cuda_home):
    import torch

    forced = forced_switch("FASTCLIP_CUDA")
    if forced == "0":
        return False
    have = torch.version.cuda is not None and cuda_home is not None
    if forced == "1":
        if not have:
            sys.exit(
                "FASTCLIP_CUDA=1 but no CUDA toolkit was found or torch is a CPU-only build "
                f"(torch.version.cuda={torch.version.cuda}, toolkit={cuda_home})"
            )
        return True
    if not have:
        return False
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return True
    if gpu_visible():
        return True
    print(
        "fastclip: CUDA toolkit found but no GPU visible and TORCH_CUDA_ARCH_LIST unset: building the CPU kernels "
        "only (FASTCLIP_CUDA=1 builds the CUDA kernels too)",
        file=sys.stderr,
    )
    return False


def rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def build_extension():
    cuda_home = find_cuda_home()
    use_cuda = want_cuda(cuda_home)
    if use_cuda:
        # torch.utils.cpp_extension reads these at import time; without a list it builds for the
        # GPUs visible.
        os.environ["CUDA_HOME"] = cuda_home
        if not gpu_visible():
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = rel("csrc/ops/*.cpp") + rel("csrc/common/*.cpp") + rel("csrc/cpu/*.cpp") + rel("csrc/python/*.cpp")
    # ATen's parallel_for is inline OpenMP: without -fopenmp it silently runs on one thread.
    # The runtime resolves to the libgomp.so.1 that torch has already loaded.
    cxx_flags = ["-O3", NO_DEBUG_INFO, "-fopenmp", "-DFASTCLIP_PYTHON_MODULE"]
    link_flags = ["-fopenmp"]
    if not use_cuda:
        print("fastclip: building the CPU-only extension", file=sys.stderr)
        return CppExtension("fastclip._C", sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or "the GPUs visible"
    print(f"fastclip: building the CUDA extension (toolkit {cuda_home}, architectures: {archs})", file=sys.stderr)
    sources += rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu")
    cxx_flags.append("-DFASTCLIP_WITH_CUDA")
    # After the toolkit's own headers: the wheels also ship a partial cuda_runtime.h.
    wheel_includes = [flag for inc in nvidia_wheel_include_dirs() for flag in ("-idirafter", inc)]
    return CUDAExtension(
        "fastclip._C",
        sources,
        # --fmad=false: no a * b + c fused into one rounding, so the statistics steps (shared with
        # the CPU op, csrc/common/*_step.h) give the CPU's bits and a run resumes bit for bit on
        # any device; the streaming kernels are bound by memory, not by the extra instruction.
        extra_compile_args={"cxx": cxx_flags + wheel_includes, "nvcc": ["-O3", "-lineinfo", "--fmad=false"]},
        extra_link_args=link_flags,
    )


def want_cuda_on_cpu(cuda_home):
    if forced_switch("FASTCLIP_CUDA_ON_CPU") != "1":
        return False
    if cuda_home is None:
        sys.exit("FASTCLIP_CUDA_ON_CPU=1 but no CUDA toolkit was found (its headers are needed; set CUDA_HOME)")
    return True


def kernel_wrappers():
    """One build/cuda_on_cpu/<name>.cpp per csrc/cuda/*_kernel.cu, including the layer's header and
    then the kernel file: BuildExtension sends every .cu to nvcc, and the layer compiles the
    kernels with the host compiler. Rewritten only when their text changes, so ninja keeps its
    objects."""
    out_dir = os.path.join(ROOT, "build", "cuda_on_cpu")
    os.makedirs(out_dir, exist_ok=True)
    header = os.path.join(ROOT, "csrc", "simt", "cuda_on_cpu.h")
    wrappers = []
    for kernel in sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*_kernel.cu"))):
        name = os.path.splitext(os.path.basename(kernel))[0]
        text = (
            f"// Generated by setup.py: {name}.cu for the CPU execution layer (fastclip._cuda_on_cpu).\n"
            f'#include "{header}"\n#include "{kernel}"\n'
        )
        path = os.path.join(out_dir, name + ".cpp")
        if not os.path.isfile(path) or pathlib.Path(path).read_text() != text:
            pathlib.Path(path).write_text(text)
        wrappers.append(os.path.relpath(path, ROOT))
    return wrappers


def host_fma_flags():
    """FMA instructions for the layer where this machine has them, as a GPU has, and contraction
    off, as the CUDA build's --fmad=false: a * b + c is never fused into one rounding, so the
    statistics (and everything else) are the operations the CPU op computes. With contraction on,
    the layer's ZClip state drifts from the CPU op's in the last bits (tests/test_cuda_kernels.py's
    bitwise comparison fails), as nvcc's default --fmad=true made the GPU's."""
    try:
        with open("/proc/cpuinfo") as f:
            has_fma = any(line.startswith("flags") and " fma" in line for line in f)
    except OSError:
        has_fma = False
    return ["-mfma", "-ffp-contract=off"] if has_fma and platform.machine() in ("x86_64", "AMD64") else []


def cuda_on_cpu_extension(cuda_home):
    """fastclip._cuda_on_cpu: csrc/cuda's host entry points (registered for CPU) and kernels on
    csrc/simt, built by g++ against the toolkit's headers only (no nvcc, no cudart)."""
    from torch.utils.cpp_extension import CppExtension

    real_runtime = {os.path.join("csrc", "cuda", "device_runtime_cuda.cpp")}  # the GPU's; simt has the host one
    sources = (
        rel("csrc/common/*.cpp")
        + [s for s in rel("csrc/cuda/*.cpp") if s not in real_runtime]
        + rel("csrc/simt/*.cpp")
        + kernel_wrappers()
    )
    include = os.path.join(cuda_home, "include")
    cxx_flags = [
        "-O2",
        NO_DEBUG_INFO,
        "-std=c++20",
        "-fno-strict-aliasing",  # the kernels pun 16-byte vectors, which nvcc allows
        "-fopenmp",
        "-Wno-unknown-pragmas",  # the kernels' `#pragma unroll` is nvcc's
        # Its csrc/common and csrc/cuda are compiled differently from _C's copies (same names): its
        # own calls must bind to its own; only PyInit is exported (static registration needs no export).
        "-fvisibility=hidden",
        "-DFASTCLIP_CUDA_ON_CPU",
        f"-I{include}",
        f"-I{os.path.join(include, 'cccl')}",  # <cuda/atomic> since CUDA 13
    ] + host_fma_flags()
    print(
        f"fastclip: building the CPU execution layer fastclip._cuda_on_cpu (toolkit headers {include})", file=sys.stderr
    )
    return CppExtension(
        "fastclip._cuda_on_cpu", sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"]
    )


class BuildProgress:
    """Reports an extension's build every PERIOD seconds while it runs (objects written so far, of
    its sources) and its time when done, on the terminal where there is one, else on stderr."""

    PERIOD = 15.0

    def __init__(self, name, sources, build_temp):
        self.name, self.sources, self.build_temp = name, sources, build_temp
        self.stop = threading.Event()
        try:
            self.out = open("/dev/tty", "w")  # closed in __exit__
        except OSError:
            self.out = None

    def say(self, line):
        print(f"fastclip: {line}", file=self.out or sys.stderr, flush=True)

    def compiled(self):
        """Objects written since the build started (ninja leaves up-to-date ones alone)."""
        found = 0
        for folder, _, files in os.walk(self.build_temp):
            for name in files:
                try:
                    found += name.endswith(".o") and os.path.getmtime(os.path.join(folder, name)) >= self.start
                except OSError:  # replaced while we looked
                    pass
        return found

    def watch(self):
        while not self.stop.wait(self.PERIOD):
            seconds = time.time() - self.start
            self.say(f"{self.name}: {self.compiled()} of {self.sources} files compiled ({seconds:.0f} s)")

    def __enter__(self):
        self.start = time.time()
        self.say(f"building {self.name} from {self.sources} files")
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, error_type, *_):
        self.stop.set()
        self.thread.join()
        if error_type is None:
            self.say(f"{self.name} built in {time.time() - self.start:.0f} s")
        if self.out is not None:
            self.out.close()


def main():
    extensions = [build_extension()]  # first: it sets CUDA_HOME before cpp_extension is imported
    cuda_home = find_cuda_home()
    if want_cuda_on_cpu(cuda_home):
        extensions.append(cuda_on_cpu_extension(cuda_home))
    from torch.utils.cpp_extension import BuildExtension

    class BuildExtensions(BuildExtension.with_options(use_ninja=True)):
        """The layer compiles in a folder of its own: it compiles csrc/common with other flags than
        _C, and in a shared folder the two would overwrite each other's objects and build.ninja."""

        def build_extension(self, ext):
            shared = self.build_temp
            if ext.name == "fastclip._cuda_on_cpu":
                self.build_temp = os.path.join(shared, "cuda_on_cpu")
            try:
                with BuildProgress(ext.name, len(ext.sources), self.build_temp):
                    return super().build_extension(ext)
            finally:
                self.build_temp = shared

    setup(
        ext_modules=extensions,
        cmdclass={"build_ext": BuildExtensions},
    )


if __name__ == "__main__":
    main()
