"""Domain errors. Each carries the name of its gRPC status code; one interceptor maps them.

Nothing here imports grpc: the batcher, the registry and the preprocessing raise these, and only
the transport layer turns `exc.code` into `grpc.StatusCode[exc.code]`.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error a client may see; `str(exc)` is the message sent to the client."""

    code = "INTERNAL"


class InvalidInput(ServingError):
    """Malformed request: wrong shape, dtype, size, a corrupt image. Name the field and index."""

    code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    """Unknown model, version or output."""

    code = "NOT_FOUND"


class FailedPrecondition(ServingError):
    """The request cannot be done in the server's state: model control is off, or the store's
    files for a model do not load (what served before still does)."""

    code = "FAILED_PRECONDITION"


class QueueFull(ServingError):
    """The model's queue is at `max_queue_size`; the client may retry later."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ServingError):
    """The client's deadline passed before the work could run."""

    code = "DEADLINE_EXCEEDED"


class Cancelled(ServingError):
    """The client went away before the work could run."""

    code = "CANCELLED"


class Unavailable(ServingError):
    """The server is shutting down or the model is not ready."""

    code = "UNAVAILABLE"


class ModelFailed(ServingError):
    """The runtime failed on a batch; the message is fixed, the cause goes to the log."""

    code = "INTERNAL"
