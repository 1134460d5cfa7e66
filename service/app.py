"""Composition root: settings → registry, batchers, servicers, metrics, the gRPC and HTTP ports.

app = await App.start(settings)   # serving from here on; app.grpc_port is the bound port
await app.stop()                  # drain: health NOT_SERVING, refuse new work, finish the rest
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from service._proto import POOL
from service._proto.digits.v1 import digits_pb2, digits_pb2_grpc
from service._proto.inference import grpc_service_pb2, grpc_service_pb2_grpc
from service.domain.batch_types import BatchingConfig
from service.domain.engine import Engine
from service.domain.lifecycle import ModelControl
from service.domain.preprocess import ImageLimits
from service.metrics import Metrics, serve_metrics
from service.settings import Settings
from service.store.registry import Registry, load_registry
from service.store.repository import model_names
from service.transport.auth import AuthInterceptor, Tokens
from service.transport.closing import ClosingGate
from service.transport.digits import DigitsServicer
from service.transport.http.common import HttpConfig
from service.transport.http.server import HttpServer
from service.transport.interceptor import ErrorInterceptor
from service.transport.stream import Streams
from service.transport.tls import CertificateFiles
from service.transport.v2 import InferenceServicer
from service.workers import WorkerRole

log = logging.getLogger(__name__)

SERVICES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    digits_pb2.DESCRIPTOR.services_by_name["Digits"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
)
# Our generated code lives in a private descriptor pool (tritonclient owns the default one);
# reflection answers from that pool, so the health service's descriptor goes there too.
POOL.AddSerializedFile(health_pb2.DESCRIPTOR.serialized_pb)


def runtime_options(settings: Settings) -> dict[str, Any]:
    """How each model version's onnxruntime sessions are made (`load_registry`'s options)."""
    return {
        "warmup": settings.warmup,
        "device": settings.device,
        "device_id": settings.device_id,
        "intra_op_threads": settings.intra_op_threads,
        "inter_op_threads": settings.inter_op_threads,
        "spin_wait": settings.spin_wait,
        "inline": max(settings.max_inline_cost_us, settings.max_lone_inline_cost_us) > 0,
    }


def batching_config(settings: Settings) -> BatchingConfig:
    return BatchingConfig(
        max_batch_size=settings.max_batch_size,
        max_queue_delay=settings.max_queue_delay_us / 1e6,
        max_queue_size=settings.max_queue_size,
        max_inline_cost=settings.max_inline_cost_us / 1e6,
        max_lone_inline_cost=settings.max_lone_inline_cost_us / 1e6,
    )


@dataclass
class App:
    settings: Settings
    engine: Engine
    servers: list[aio.Server]
    health: health_aio.HealthServicer
    metrics: Metrics
    grpc_port: int
    metrics_port: int
    gate: ClosingGate
    streams: Streams
    http: HttpServer | None
    http_port: int
    control: ModelControl
    _polling: asyncio.Task[None] | None = None
    _metrics_server: Any = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(cls, settings: Settings, role: WorkerRole | None = None) -> App:
        """Serve on the settings' ports; a worker (`role`) shares the gRPC port with its
        siblings, leaves `/metrics` to its parent and tells the parent when it serves."""
        try:
            tokens = settings.bearer_tokens()
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"token auth: {exc}") from exc
        load_options = runtime_options(settings)
        explicit = settings.model_control_mode == "explicit"
        at_start = _models_at_start(settings)
        registry = Registry()
        if at_start is not None:
            registry = await asyncio.to_thread(
                load_registry, settings.model_store, only=at_start, **load_options
            )
        if not registry.models and not explicit:
            raise RuntimeError(f"no model could be loaded from {settings.model_store}")
        if any(model.runtime.placement.on_cuda for model in registry.all()):
            settings = settings.on_cuda()
            log.info(
                "batching on CUDA: max_batch_size %d, max_queue_delay_us %d",
                settings.max_batch_size,
                settings.max_queue_delay_us,
            )
        metrics = Metrics()
        batching = batching_config(settings)
        engine = Engine(registry, batching, metrics, settings.max_images_per_request)
        engine.ready_when_empty = explicit  # it serves what it is asked to load
        control = ModelControl(
            engine,
            settings.model_store,
            settings.model_control_mode,
            only=settings.models,
            grace=settings.grace_period_s,
            load_options=load_options,
        )
        limits = ImageLimits(
            max_encoded_bytes=settings.max_encoded_image_bytes,
            max_pixels=settings.max_image_pixels,
        )
        # Auth first: a refused call never reaches the ErrorInterceptor, so it is not counted.
        interceptors: list[aio.ServerInterceptor] = [AuthInterceptor(tokens)] if tokens else []
        gate = ClosingGate()
        interceptors.append(ErrorInterceptor(metrics, engine.known_models, gate))
        inference = InferenceServicer(engine, control)
        digits = DigitsServicer(engine, limits)
        health = health_aio.HealthServicer()

        def grpc_server(reuse_port: bool, max_concurrent_rpcs: int) -> aio.Server:
            server = aio.server(
                interceptors=interceptors,
                maximum_concurrent_rpcs=max_concurrent_rpcs or None,
                options=[
                    ("grpc.max_receive_message_length", settings.max_message_bytes),
                    ("grpc.max_send_message_length", settings.max_message_bytes),
                    # Off unless asked for: a second server on a taken port must fail.
                    ("grpc.so_reuseport", 1 if reuse_port else 0),
                ],
            )
            grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(inference, server)
            digits_pb2_grpc.add_DigitsServicer_to_server(digits, server)
            health_pb2_grpc.add_HealthServicer_to_server(health, server)
            reflection.enable_server_reflection(
                (*SERVICES, reflection.SERVICE_NAME), server, pool=POOL
            )
            return server

        # gRPC's asyncio server waits for one new call at a time, a loop turn each: under load
        # the calls reach the handlers one by one, too late to share a batch. Several servers
        # on the one port (SO_REUSEPORT) take in calls side by side, the kernel spreading the
        # connections over them. A limit on concurrent calls holds per server, so it gets one.
        loops = 1 if settings.max_concurrent_rpcs else settings.grpc_accept_loops
        tls = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            tls = CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        if loops > 1 and not role and settings.grpc_port:
            _check_port_free(settings.host, settings.grpc_port)
        servers: list[aio.Server] = []
        port = settings.grpc_port
        for _ in range(loops):
            server = grpc_server(role is not None or loops > 1, settings.max_concurrent_rpcs)
            address = f"{settings.host}:{port}"
            if tls is not None:
                bound = server.add_secure_port(address, tls.credentials())
            else:
                bound = server.add_insecure_port(address)
            if bound == 0:
                raise RuntimeError(f"could not bind gRPC to {settings.host}:{port}")
            port = bound
            servers.append(server)
        metrics_server, metrics_port = (
            (None, 0) if role else serve_metrics(metrics, settings.host, settings.metrics_port)
        )

        http = None
        http_port = 0
        if settings.allow_http:
            config = HttpConfig(
                max_body_bytes=settings.max_message_bytes,
                body_timeout_s=settings.http_body_timeout_s,
                limits=limits,
                tokens=Tokens(tokens) if tokens else None,
                playground=settings.playground,
            )
            http = HttpServer(engine, metrics, config, control)

        engine.start()
        for server in servers:
            await server.start()
        if http is not None:
            try:
                http_port = await http.start(
                    settings.host,
                    settings.http_port,
                    ssl_context=tls.ssl_context() if tls else None,
                    reuse_port=role is not None,
                )
            except OSError as exc:
                await asyncio.gather(*(server.stop(0) for server in servers))
                raise RuntimeError(
                    f"could not bind HTTP to {settings.host}:{settings.http_port}: {exc}"
                ) from exc
        serving = health_pb2.HealthCheckResponse.SERVING
        await health.set("", serving)
        for name in (*SERVICES[:2], *registry.models):
            await health.set(name, serving)

        async def model_health(name: str, served: bool) -> None:
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            await health.set(name, serving if served else not_serving)

        control.on_change = model_health
        polling = None
        if settings.model_control_mode == "poll":
            polling = asyncio.create_task(
                control.run_polling(settings.repository_poll_secs), name="repository-poll"
            )
        log.info(
            "security: TLS %s, mutual TLS %s, token auth %s (%d tokens)",
            "on" if settings.tls_cert else "off",
            "on" if settings.tls_client_ca else "off",
            "on" if tokens else "off",
            len(tokens),
        )
        served = ", ".join(f"{m.name}/{m.version}" for m in registry.all()) or "no model yet"
        ports = f"gRPC port {port}" + (f", HTTP port {http_port}" if http else "")
        if role:
            log.info("serving %s on the shared %s", served, ports)
            role.report_ready(port)
        else:
            log.info("serving %s on %s, metrics on port %d", served, ports, metrics_port)
        return cls(
            settings,
            engine,
            servers,
            health,
            metrics,
            port,
            metrics_port,
            gate,
            inference.streams,
            http,
            http_port,
            control,
            polling,
            metrics_server,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, new work UNAVAILABLE, queued and running work finishes; then gRPC
        stops without cancelling a call that arrived meanwhile (`service.transport.closing`)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_period_s if grace is None else grace
        deadline = time.monotonic() + grace
        if self._polling is not None:
            self._polling.cancel()
        if self.http is not None:
            self.http.draining = True  # new HTTP requests 503, answers close their connections
            await self.http.settle(limit=min(grace, 5.0))  # no await unless bodies are arriving
        self.engine.draining = True  # from here on new work is refused
        log.info("draining: finishing queued work for up to %.1f s", grace)
        await self.health.enter_graceful_shutdown()
        await self.engine.stop(grace)
        await self.gate.settle(limit=deadline - time.monotonic())
        held = self.gate.held
        remaining = max(deadline - time.monotonic(), 1.0)
        stopping = asyncio.gather(*(server.stop(remaining) for server in self.servers))
        await asyncio.sleep(0)  # the task's first step begins gRPC's shutdown (GOAWAY)
        self.gate.release()
        self.streams.close_all()  # open ModelStreamInfer streams end UNAVAILABLE
        log.info("gRPC stopping; %d calls that arrived meanwhile refused as UNAVAILABLE", held)
        if self.http is not None:
            await self.http.stop()
        await stopping
        # gRPC's own task for each call ends a moment after the server has stopped, when its
        # last completion arrives from the completion queue's thread; cancelled by the end of
        # the event loop instead, it logs a CancelledError traceback.
        leftover = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if leftover:
            await asyncio.wait(leftover, timeout=1.0)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        log.info("stopped")

    async def wait(self) -> None:
        await asyncio.gather(*(server.wait_for_termination() for server in self.servers))


def _check_port_free(host: str, port: int) -> None:
    """Servers that share a port with SO_REUSEPORT would share it with another process doing
    the same: refuse a port something already listens on, as a plain bind would."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise RuntimeError(f"could not bind gRPC to {host}:{port}: {exc}") from exc


def _models_at_start(settings: Settings) -> list[str] | None:
    """The model names to load at start; [] means every one, None none (explicit mode with no
    `--load-model`)."""
    if settings.model_control_mode != "explicit":
        return settings.models
    if not settings.load_model:
        return None
    if "*" in settings.load_model:
        return settings.models
    in_store = set(model_names(settings.model_store))
    for name in settings.load_model:
        if name not in in_store or (settings.models and name not in settings.models):
            raise RuntimeError(f"load_model: model '{name}' is not in {settings.model_store}")
    return settings.load_model
