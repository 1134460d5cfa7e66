"""The domain: images → rows (`preprocess`), rows → batches → outputs (`batching`, `inline`), and
the one call a transport makes (`engine`).

Imports neither grpc nor protobuf, nor onnxruntime: the model store's `runtime` runs the model.
"""
