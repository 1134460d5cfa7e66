"""Every knob of the server, as flags and `DIGITS_*` environment variables of the same names.

`python -m service --help` prints these docstrings; the README's settings table is made from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The batcher on a GPU, where a batch costs little more than one image: applied only when the
# sessions really run on CUDA and the setting was not given. Provisional until benchmarks/
# gpu_check.sh has measured its candidates on a GPU (README, GPU).
GPU_DEFAULTS = {"max_batch_size": 256, "max_queue_delay_us": 0}


class Settings(BaseSettings):
    """Serve the models of a model store over gRPC (KServe V2 and digits.v1) and HTTP (KServe V2
    REST and /v1/classify)."""

    model_config = SettingsConfigDict(
        env_prefix="DIGITS_",
        cli_prog_name="python -m service",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        use_attribute_docstrings=True,
        extra="forbid",
        protected_namespaces=(),
    )

    model_store: Path = Path("model_store")
    """Directory of `<model>/<version>/{model.onnx,manifest.json}`."""
    models: list[str] = Field(default_factory=list)
    """Serve only these model names (default: every model in the store)."""
    model_control_mode: Literal["none", "poll", "explicit"] = "none"
    """`none`: read the store once; `poll`: load its changes; `explicit`: load/unload on request."""
    repository_poll_secs: float = Field(15.0, gt=0)
    """With `poll`: seconds between two looks at the store."""
    load_model: list[str] = Field(default_factory=list)
    """With `explicit`: the models loaded at start (`*`: every one); default none."""
    host: str = "0.0.0.0"
    """Address the gRPC, HTTP and metrics ports bind to."""
    grpc_port: int = Field(8001, ge=0, le=65535)
    """gRPC port (KServe V2, digits.v1, health, reflection); 0 picks a free port and logs it."""
    http_port: int = Field(8000, ge=0, le=65535)
    """HTTP port (KServe V2 REST, `POST /v1/classify`); 0 picks a free port and logs it."""
    allow_http: bool = True
    """Serve the HTTP port; off (`--no-allow-http`) serves gRPC only."""
    playground: bool = False
    """Serve the playground page (draw a digit, watch every layer) at `/` on the HTTP port."""
    metrics_port: int = Field(8002, ge=0, le=65535)
    """Prometheus `/metrics` port; 0 picks a free port and logs it."""

    workers: int = Field(1, ge=1, le=64)
    """Processes sharing the gRPC and HTTP ports; connections, not calls, spread over them."""
    grpc_accept_loops: int = Field(4, ge=1, le=16)
    """gRPC servers in each process on the one port, each taking in new calls; 1 with a limit."""

    device: Literal["auto", "cuda", "cpu"] = "auto"
    """`auto` uses the CUDA provider when a GPU is usable, else the CPU provider."""
    device_id: int = Field(0, ge=0)
    """CUDA device ordinal."""
    intra_op_threads: int = Field(0, ge=0)
    """onnxruntime threads inside one operator; 0: one per core (cores/workers with workers)."""
    inter_op_threads: int = Field(1, ge=1)
    """onnxruntime threads across independent operators."""
    spin_wait: bool = True
    """Let onnxruntime's threads spin-wait for work (faster); off leaves idle CPU to others."""
    warmup: bool = True
    """Run each model once at load, so the first request pays no initialisation."""

    max_batch_size: int = Field(64, ge=1, le=4096)
    """Most images the dynamic batcher gives the model in one call (256 on CUDA unless set)."""
    max_queue_delay_us: int = Field(0, ge=0)
    """How long a batch may wait to fill, in microseconds; 0 runs whatever is queued at once."""
    max_queue_size: int = Field(4096, ge=1)
    """Most images waiting per model; beyond it requests fail with RESOURCE_EXHAUSTED."""
    max_inline_cost_us: int = Field(200, ge=0)
    """Batches predicted to take at most this many us run on the event loop, not a thread; 0: no."""
    max_lone_inline_cost_us: int = Field(2000, ge=0)
    """The same for a lone request on a quiet server (nothing else waits while it runs); 0: no."""

    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Largest gRPC message received or sent, and HTTP request body (layer tensors are large)."""
    http_body_timeout_s: float = Field(30.0, gt=0)
    """Time an HTTP request's body may take to arrive; a slower one gets 408."""
    max_concurrent_rpcs: int = Field(0, ge=0)
    """Calls run at once, health checks included; more get RESOURCE_EXHAUSTED. 0: no limit."""
    max_images_per_request: int = Field(1024, ge=1)
    """Most images (rows) one request may carry."""
    max_encoded_image_bytes: int = Field(8 * 1024 * 1024, ge=1)
    """Largest PNG/JPEG accepted by digits.v1."""
    max_image_pixels: int = Field(16_000_000, ge=784)
    """Largest decoded width x height accepted (decompression bombs are refused before decoding)."""

    tls_cert: Path | None = None
    """Certificate chain (PEM) for TLS on the gRPC and HTTP ports, reloaded; needs `tls_key`."""
    tls_key: Path | None = None
    """Private key (PEM) of `tls_cert`."""
    tls_client_ca: Path | None = None
    """CA (PEM) that must have signed each client's certificate (mutual TLS); needs `tls_cert`."""
    auth_tokens: SecretStr | None = None
    """Comma-separated bearer tokens; any one admits a call (health and reflection need none)."""
    auth_tokens_file: Path | None = None
    """Bearer tokens, one a line (blank and `#` lines ignored), added to `auth_tokens`."""

    grace_period_s: float = Field(10.0, ge=0)
    """On SIGTERM/SIGINT: time for queued and running work to finish before the server stops."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""

    @model_validator(mode="after")
    def _queue_holds_a_whole_request(self) -> Settings:
        if self.max_queue_size < self.max_images_per_request:
            raise ValueError(
                f"max_queue_size ({self.max_queue_size}) must be at least "
                f"max_images_per_request ({self.max_images_per_request}): a larger request "
                "could never be queued"
            )
        return self

    @model_validator(mode="after")
    def _model_control_fits(self) -> Settings:
        if self.load_model and self.model_control_mode != "explicit":
            raise ValueError("load_model needs model_control_mode explicit")
        if self.model_control_mode == "explicit" and self.workers > 1:
            raise ValueError(
                "model_control_mode explicit needs workers 1: a load call reaches one worker "
                "(poll mode works with several)"
            )
        return self

    @model_validator(mode="after")
    def _tls_files_come_together(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS first)")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_tokens_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        return self

    def on_cuda(self) -> Settings:
        """These settings for sessions on CUDA: GPU_DEFAULTS where nothing was given."""
        return self.model_copy(
            update={k: v for k, v in GPU_DEFAULTS.items() if k not in self.model_fields_set}
        )

    def bearer_tokens(self) -> list[str]:
        """Every configured token: `auth_tokens` and the lines of `auth_tokens_file`."""
        raw = self.auth_tokens.get_secret_value() if self.auth_tokens else ""
        tokens = [token.strip() for token in raw.split(",")]
        if self.auth_tokens_file is not None:
            lines = (line.strip() for line in self.auth_tokens_file.read_text().splitlines())
            tokens += [line for line in lines if not line.startswith("#")]
        tokens = [token for token in tokens if token]
        if not tokens and (raw or self.auth_tokens_file is not None):
            # Asked for auth but got no token: refuse to start rather than serve everyone.
            raise ValueError("auth_tokens and auth_tokens_file hold no token")
        return tokens
