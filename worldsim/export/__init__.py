"""ONNX export of single denoiser steps, parity checks, and onnxruntime runners that need no torch."""
