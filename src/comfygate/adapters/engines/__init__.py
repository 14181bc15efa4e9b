"""Built-in engines that run in the gateway's process: ``preview`` (no model) and
``ddcolor-onnx`` (DDColor on onnxruntime). Both implement ``services.engines.Engine``.

Import the engine modules directly; nothing is imported here so that merely importing
the package loads neither numpy-heavy code nor onnxruntime.
"""
