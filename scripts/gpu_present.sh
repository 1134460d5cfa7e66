#!/bin/sh
# Exit 0 when this machine has an NVIDIA GPU that its driver reports: nvidia-smi lists one, or
# the driver's libcuda.so.1 counts at least one device (nvidia-smi is not always installed, the
# driver library is). Says what it found on stderr. Usage: scripts/gpu_present.sh [PYTHON]
python=${1:-python3}
if command -v nvidia-smi >/dev/null 2>&1 && gpus=$(nvidia-smi -L 2>/dev/null) \
    && echo "$gpus" | grep -q '^GPU '; then
  echo "GPU present (nvidia-smi): $(echo "$gpus" | head -n 1)" >&2
  exit 0
fi
if "$python" - <<'PY' >&2; then exit 0; fi
import ctypes, sys
try:
    libcuda = ctypes.CDLL("libcuda.so.1")
except OSError as exc:
    sys.exit(f"no GPU: no NVIDIA driver ({exc})")
count = ctypes.c_int(0)
if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
    sys.exit("no GPU: the NVIDIA driver reports no usable device")
if count.value == 0:
    sys.exit("no GPU: the NVIDIA driver reports 0 devices")
print(f"GPU present (libcuda.so.1): {count.value} device(s)")
PY
exit 1
