"""What the gRPC servicers and interceptors share: the context and handler types, a call's
deadline, and the platform name clients are told."""

from __future__ import annotations

import time
from typing import Any, TypeAlias

import grpc
from grpc import aio

# The stubs' generics are not subscriptable at run time.
Context: TypeAlias = "aio.ServicerContext[Any, Any]"
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
PLATFORM = "onnxruntime_onnx"


def deadline_of(context: Context) -> float | None:
    """The call's deadline in `time.monotonic()` seconds; None when the client set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining
