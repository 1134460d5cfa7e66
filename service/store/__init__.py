"""The model store: the versions on disk (`registry`), their manifests, and the onnxruntime
sessions that run them (`runtime`, the only module that imports onnxruntime)."""
