"""Serving through NVIDIA Triton Inference Server (DESIGN.md, "Triton model repository").

- ``spellfix.serving.env``: the Triton side's own Python environment (numpy < 2, no torch) and where
  its ``tritonserver`` binary, python backend and stub live (the ``nvidia-pytriton`` wheel), or a
  user's own ``tritonserver``.
- ``spellfix.serving.server``: start ``tritonserver`` on 127.0.0.1, wait for readiness, stop it
  (``spellfix serve`` calls ``run(args)``).
- ``spellfix.serving.model_core``: what the python-backend model does with one dynamic batch of
  requests (validate each request, decode the good ones together, answer each request) — plain
  Python, so it is tested in-process as well as through the real server.
- ``spellfix.serving.triton_model``: the python-backend ``model.py`` itself (glue around model_core).

The repository writer is ``spellfix.export.triton`` (``spellfix export --format triton``).
Nothing here imports torch.
"""
