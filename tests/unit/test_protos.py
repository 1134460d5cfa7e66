"""Our protos stay wire-compatible with Triton's: same names, numbers and types.

tritonclient's generated modules are the reference. We may leave fields,
messages and RPCs out, never rename or renumber them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
)
from tritonclient.grpc import model_config_pb2 as triton_model_config_pb2
from tritonclient.grpc import service_pb2 as triton_service_pb2

from service._proto import POOL
from service._proto.digits.v1 import digits_pb2
from service._proto.inference import grpc_service_pb2, model_config_pb2

OURS: tuple[FileDescriptor, ...] = (grpc_service_pb2.DESCRIPTOR, model_config_pb2.DESCRIPTOR)
TRITON = descriptor_pool.Default()
GENERATED_MODULES = (
    "service._proto.inference.model_config_pb2",
    "service._proto.inference.grpc_service_pb2",
    "service._proto.inference.grpc_service_pb2_grpc",
    "service._proto.digits.v1.digits_pb2",
    "service._proto.digits.v1.digits_pb2_grpc",
)
# What the contract promises on inference.GRPCInferenceService.
CONTRACT_METHODS = {
    "ServerLive",
    "ServerReady",
    "ServerMetadata",
    "ModelReady",
    "ModelMetadata",
    "ModelConfig",
    "ModelInfer",
    "ModelStatistics",
    "RepositoryIndex",
}


def _messages(descriptor: FileDescriptor | Descriptor) -> Iterator[Descriptor]:
    children = (
        descriptor.message_types_by_name.values()
        if isinstance(descriptor, FileDescriptor)
        else descriptor.nested_types
    )
    for message in children:
        yield message
        yield from _messages(message)


def _enums(descriptor: FileDescriptor) -> Iterator[EnumDescriptor]:
    yield from descriptor.enum_types_by_name.values()
    for message in _messages(descriptor):
        yield from message.enum_types


def _label(field: FieldDescriptor) -> str:
    # FieldDescriptor.label is gone in protobuf 7; these two carry the same fact.
    if field.is_repeated:
        return "repeated"
    return "required" if field.is_required else "optional"


def _signature(field: FieldDescriptor) -> tuple[object, ...]:
    referenced = field.message_type or field.enum_type
    oneof = field.containing_oneof
    return (
        field.name,
        field.number,
        field.type,
        _label(field),
        referenced.full_name if referenced else None,
        oneof.name if oneof else None,
        field.has_presence,
    )


OUR_MESSAGES = sorted((m for file in OURS for m in _messages(file)), key=lambda m: m.full_name)
OUR_ENUMS = sorted((e for file in OURS for e in _enums(file)), key=lambda e: e.full_name)


def test_triton_reference_is_loaded_in_the_default_pool() -> None:
    assert triton_service_pb2.DESCRIPTOR.pool is TRITON
    assert triton_model_config_pb2.DESCRIPTOR.package == "inference"


def test_our_descriptors_live_in_a_private_pool() -> None:
    # Both define inference.*; sharing the default pool would fail on import.
    for file in (*OURS, digits_pb2.DESCRIPTOR):
        assert file.pool is POOL
    assert POOL is not TRITON


@pytest.mark.parametrize("module", GENERATED_MODULES)
def test_generated_module_imports(module: str) -> None:
    assert importlib.import_module(module).__name__ == module


@pytest.mark.parametrize("ours", OUR_MESSAGES, ids=lambda m: m.full_name)
def test_every_field_matches_triton(ours: Descriptor) -> None:
    theirs = TRITON.FindMessageTypeByName(ours.full_name)
    assert ours.GetOptions().map_entry == theirs.GetOptions().map_entry
    for field in ours.fields:
        assert field.name in theirs.fields_by_name, f"{ours.full_name}.{field.name} not in Triton"
        mine, reference = _signature(field), _signature(theirs.fields_by_name[field.name])
        assert mine == reference, f"{ours.full_name}.{field.name}: {mine} != Triton's {reference}"


@pytest.mark.parametrize("ours", OUR_ENUMS, ids=lambda e: e.full_name)
def test_every_enum_value_matches_triton(ours: EnumDescriptor) -> None:
    theirs = TRITON.FindEnumTypeByName(ours.full_name)
    assert [(v.name, v.number) for v in ours.values] == [
        (v.name, theirs.values_by_name[v.name].number) for v in ours.values
    ]


def test_data_types_keep_triton_numbers() -> None:
    numbers = model_config_pb2.DataType
    assert numbers.Value("TYPE_INVALID") == 0
    assert numbers.Value("TYPE_BOOL") == 1
    assert numbers.Value("TYPE_FP32") == 11
    assert numbers.Value("TYPE_STRING") == 13
    assert numbers.Value("TYPE_BF16") == 14
    assert len(numbers.values()) == 15


def test_service_methods_match_triton() -> None:
    ours = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = TRITON.FindServiceByName("inference.GRPCInferenceService")
    assert ours.full_name == theirs.full_name
    assert set(ours.methods_by_name) <= set(theirs.methods_by_name)
    assert set(ours.methods_by_name) >= CONTRACT_METHODS | {"ModelStreamInfer"}
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name
        assert method.client_streaming == other.client_streaming
        assert method.server_streaming == other.server_streaming


def test_infer_request_round_trips_through_tritonclient() -> None:
    ours = grpc_service_pb2.ModelInferRequest(model_name="convnet", model_version="1", id="a")
    image = ours.inputs.add(name="image", datatype="FP32", shape=[2, 1, 28, 28])
    image.parameters["binary_data_size"].int64_param = 6272
    ours.outputs.add(name="layer.conv1")
    ours.parameters["priority"].uint64_param = 3
    ours.raw_input_contents.append(bytes(6272))

    theirs = triton_service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.inputs[0].shape == [2, 1, 28, 28]
    assert theirs.inputs[0].parameters["binary_data_size"].int64_param == 6272
    assert theirs.outputs[0].name == "layer.conv1"
    back = grpc_service_pb2.ModelInferRequest.FromString(theirs.SerializeToString())
    assert back == ours


def test_model_config_reads_back_in_tritonclient() -> None:
    config = model_config_pb2.ModelConfig(
        name="convnet",
        platform="onnxruntime_onnx",
        max_batch_size=64,
        input=[
            model_config_pb2.ModelInput(
                name="image", data_type=model_config_pb2.TYPE_FP32, dims=[1, 28, 28]
            )
        ],
        dynamic_batching=model_config_pb2.ModelDynamicBatching(
            preferred_batch_size=[32, 64], max_queue_delay_microseconds=500
        ),
    )
    response = grpc_service_pb2.ModelConfigResponse(config=config)
    theirs = triton_service_pb2.ModelConfigResponse.FromString(response.SerializeToString())
    assert theirs.config.input[0].data_type == triton_model_config_pb2.TYPE_FP32
    assert theirs.config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert list(theirs.config.dynamic_batching.preferred_batch_size) == [32, 64]


def test_digits_service_declares_the_friendly_api() -> None:
    service = digits_pb2.DESCRIPTOR.services_by_name["Digits"]
    assert service.full_name == "digits.v1.Digits"
    assert [m.name for m in service.methods] == ["Classify", "ListModels", "GetModel"]
    image = digits_pb2.Image(pixels=digits_pb2.Pixels(data=[0.0] * 784))
    assert image.WhichOneof("source") == "pixels"
