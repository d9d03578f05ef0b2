"""Static checks of the compiled CUDA code, for machines without a GPU.

1. Every kernel compiles without register spills (ptxas -v on each .cu, with torch's flags).
2. The built extension holds SASS for every architecture the README claims, plus its PTX.
3. The streaming kernels (norm, scale, clip by norm, clamp, AGC, Stable-SPAM's passes) use
   16-byte global loads (LDG.E.128) on every architecture. The clippers' one-block statistics kernels read a few scalars and are not checked.
Exits non-zero, saying why, if any check fails.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from setup import find_cuda_home  # noqa: E402


# Kernels that stream over the tensors' data and must use 16-byte loads.
STREAMING_KERNELS = ("multi_tensor_norm_kernel", "multi_tensor_scale_kernel", "multi_tensor_clip_by_norm_kernel",
                     "multi_tensor_clamp_kernel", "agc_clip_kernel", "clip_grad_norm_kernel", "clip_step_kernel",
                     "stable_spam_norms_kernel", "stable_spam_apply_kernel")


def claimed_architectures():
    """The README's line '**CUDA architectures**: sm_80, sm_90 (SASS), compute_90 (PTX)'."""
    with open(os.path.join(ROOT, "README.md")) as f:
        for line in f:
            if line.startswith("**CUDA architectures**"):
                return re.findall(r"sm_\d+a?", line), re.findall(r"compute_\d+a?", line)
    sys.exit("README.md has no '**CUDA architectures**' line")


def tool(name, cuda_home):
    candidates = [shutil.which(name), os.path.join(cuda_home, "bin", name)]
    try:
        import triton  # CUDA torch's dependency ships cuobjdump where the toolkit lacks it

        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name))
    except ImportError:
        pass
    found = next((c for c in candidates if c and os.path.isfile(c)), None)
    if not found:
        sys.exit(f"{name} not found (looked in {candidates})")
    return found


def check_spills(cuda_home, sass_archs):
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    flags = ["-O3", "-std=c++20", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
             "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "-Xptxas", "-v"]
    for arch in sass_archs:
        flags += ["-gencode", f"arch=compute_{arch[3:]},code={arch}"]
    failures, kernels = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu"))):
            out = subprocess.run([nvcc, *flags, "-c", source, "-o", os.path.join(tmp, "k.o")],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"nvcc failed on {source}:\n{out.stderr}")
            current = None
            for line in out.stderr.splitlines():
                m = re.search(r"Compiling entry function '(\S+)' for '(\S+)'", line)
                if m:
                    current = f"{m.group(1)} ({m.group(2)})"
                    kernels += 1
                m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
                if m and (int(m.group(1)) or int(m.group(2))):
                    failures.append(f"{current}: {line.strip()}")
    if failures:
        sys.exit("register spills:\n" + "\n".join(failures))
    print(f"spills: none in {kernels} kernel compilations for {', '.join(sass_archs)}")


def check_binary(cuobjdump, sass_archs, ptx_archs):
    libs = glob.glob(os.path.join(ROOT, "fastclip", "_C*.so"))
    if not libs:
        sys.exit("fastclip/_C*.so not found: build the extension first")
    lib = libs[0]
    elf = subprocess.run([cuobjdump, "--list-elf", lib], capture_output=True, text=True).stdout
    ptx = subprocess.run([cuobjdump, "--list-ptx", lib], capture_output=True, text=True).stdout
    for arch in sass_archs:
        if f".{arch}.cubin" not in elf:
            sys.exit(f"the extension has no SASS for {arch}:\n{elf}")
    for arch in ptx_archs:
        if f".sm_{arch[len('compute_'):]}.ptx" not in ptx:
            sys.exit(f"the extension has no PTX for {arch}:\n{ptx}")
    print(f"architectures: SASS for {', '.join(sass_archs)}; PTX for {', '.join(ptx_archs)}")
    for arch in sass_archs:
        sass = subprocess.run([cuobjdump, "-sass", "-arch", arch, lib], capture_output=True, text=True).stdout
        for kernel in STREAMING_KERNELS:
            bodies = [b for b in sass.split("Function : ")[1:] if kernel in b.split("\n", 1)[0]]
            if not bodies or not all(re.search(r"\bLDG\.E\S*\.128\b", b) for b in bodies):
                sys.exit(f"{kernel} on {arch}: no 16-byte global loads (LDG.E.128) in its SASS")
        print(f"{arch}: 16-byte global loads in {', '.join(STREAMING_KERNELS)}")


def main():
    cuda_home = find_cuda_home()
    if cuda_home is None:
        sys.exit("no CUDA toolkit found")
    sass_archs, ptx_archs = claimed_architectures()
    check_spills(cuda_home, sass_archs)
    check_binary(tool("cuobjdump", cuda_home), sass_archs, ptx_archs)


if __name__ == "__main__":
    main()
