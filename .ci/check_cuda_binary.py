"""Static checks of the compiled CUDA code, for machines without a GPU. Reads the built
extension's fatbinary only (cuobjdump), so it checks the code the build made, with the build's
own flags, and compiles nothing.

1. The extension holds SASS for every architecture the README claims, plus its PTX.
2. No kernel spills registers: on every architecture, a kernel's stack frame is exactly the bytes
   of its own local arrays (LOCAL_ARRAY_BYTES; zero for all but one), so any spill shows as more.
3. The streaming kernels (norm, scale, clip by norm, clamp, AGC, Stable-SPAM's passes) use
   16-byte global loads (LDG.E.128) on every architecture. The clippers' one-block statistics
   kernels read a few scalars and are not checked.
4. The kernels that rewrite data they read (the cooperative norm-step-scale kernels, AGC's
   clipping passes) have no read-only-cache loads (LDG.E.CONSTANT): that cache is not coherent with
   the kernel's own writes, the one hazard the CPU execution layer cannot model.
Exits non-zero, saying why, if any check fails.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from setup import find_cuda_home  # noqa: E402

# Kernels that stream over the tensors' data and must use 16-byte loads.
STREAMING_KERNELS = (
    "multi_tensor_norm_kernel",
    "multi_tensor_scale_kernel",
    "multi_tensor_clip_by_norm_kernel",
    "multi_tensor_clamp_kernel",
    "agc_clip_kernel",
    "agc_partials_kernel",
    "agc_scale_kernel",
    "clip_grad_norm_kernel",
    "clip_step_kernel",
    "stable_spam_norms_kernel",
    "stable_spam_apply_kernel",
)

# Kernels that write global data they also read (in other blocks, after a grid barrier, or after
# an earlier pass): none may read through the read-only cache.
REWRITING_KERNELS = ("clip_step_kernel", "clip_grad_norm_kernel", "agc_clip_kernel", "agc_scale_kernel")


def function_bodies(sass, kernel):
    """The SASS of every instantiation of `kernel`: its mangled name is the identifier preceded by
    its length and followed by E (end of name) or I (template arguments), which the anonymous
    namespace of a file named after it (_18_agc_clip_kernel_cu_...) is not."""
    pattern = re.compile(rf"\d{re.escape(kernel)}[EI]")
    return [b for b in sass.split("Function : ")[1:] if pattern.search(b.split("\n", 1)[0])]


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


# Kernels whose stack frame holds a local array, by a substring of their mangled name: AutoClip's
# steps keep a 16-entry int64 histogram (csrc/common/autoclip_history.h). Every other kernel: 0.
LOCAL_ARRAY_BYTES = {"AutoClipStep": 128}


def check_spills(cuobjdump, lib, sass_archs):
    usage = subprocess.run([cuobjdump, "--dump-resource-usage", lib], capture_output=True, text=True, check=True)
    failures, kernels, arch = [], 0, None
    function = None
    for line in usage.stdout.splitlines():
        if m := re.match(r"arch = (sm_\d+a?)", line):
            arch = m.group(1)
        elif m := re.match(r"\s*Function (\S+):", line):
            function = m.group(1)
        elif function and (m := re.search(r"\bSTACK:(\d+) .*\bLOCAL:(\d+)", line)):
            kernels += 1
            expected = next((b for key, b in LOCAL_ARRAY_BYTES.items() if key in function), 0)
            stack, local = int(m.group(1)), int(m.group(2))
            if stack != expected or local != 0:
                failures.append(f"{function} ({arch}): STACK:{stack} LOCAL:{local}, expected STACK:{expected} LOCAL:0")
            function = None
    if kernels == 0:
        sys.exit(f"cuobjdump listed no kernel's resource usage in {lib}")
    if failures:
        sys.exit("register spills (a stack frame beyond the kernel's own arrays):\n" + "\n".join(failures))
    print(f"spills: none in {kernels} kernels over {', '.join(sass_archs)}")


def built_library():
    libs = glob.glob(os.path.join(ROOT, "fastclip", "_C*.so"))
    if not libs:
        sys.exit("fastclip/_C*.so not found: build the extension first")
    return libs[0]


def check_binary(cuobjdump, lib, sass_archs, ptx_archs):
    elf = subprocess.run([cuobjdump, "--list-elf", lib], capture_output=True, text=True).stdout
    ptx = subprocess.run([cuobjdump, "--list-ptx", lib], capture_output=True, text=True).stdout
    for arch in sass_archs:
        if f".{arch}.cubin" not in elf:
            sys.exit(f"the extension has no SASS for {arch}:\n{elf}")
    for arch in ptx_archs:
        if f".sm_{arch[len('compute_') :]}.ptx" not in ptx:
            sys.exit(f"the extension has no PTX for {arch}:\n{ptx}")
    print(f"architectures: SASS for {', '.join(sass_archs)}; PTX for {', '.join(ptx_archs)}")
    for arch in sass_archs:
        sass = subprocess.run([cuobjdump, "-sass", "-arch", arch, lib], capture_output=True, text=True).stdout
        for kernel in STREAMING_KERNELS:
            bodies = function_bodies(sass, kernel)
            if not bodies or not all(re.search(r"\bLDG\.E\S*\.128\b", b) for b in bodies):
                sys.exit(f"{kernel} on {arch}: no 16-byte global loads (LDG.E.128) in its SASS")
        print(f"{arch}: 16-byte global loads in {', '.join(STREAMING_KERNELS)}")
        for kernel in REWRITING_KERNELS:
            bodies = function_bodies(sass, kernel)
            if not bodies:
                sys.exit(f"{kernel} on {arch}: not found in the SASS")
            if any(re.search(r"\bLDG\.E\S*\.CONSTANT\b", b) for b in bodies):
                sys.exit(
                    f"{kernel} on {arch}: read-only-cache loads (LDG.E.CONSTANT) in a kernel that rewrites its data"
                )
        print(f"{arch}: no read-only-cache loads in {', '.join(REWRITING_KERNELS)}")


def main():
    cuda_home = find_cuda_home()
    if cuda_home is None:
        sys.exit("no CUDA toolkit found")
    sass_archs, ptx_archs = claimed_architectures()
    cuobjdump, lib = tool("cuobjdump", cuda_home), built_library()
    check_binary(cuobjdump, lib, sass_archs, ptx_archs)
    check_spills(cuobjdump, lib, sass_archs)


if __name__ == "__main__":
    main()
