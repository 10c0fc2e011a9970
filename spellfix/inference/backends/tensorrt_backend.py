"""TensorRT backend: the four engines of an export's ``tensorrt/`` dir, device buffers reused across steps.

Every I/O tensor gets one device buffer sized for its profile's maximum shape, allocated once. The
self-attention cache and the cross-attention K/V live in two buffer sets used in turn: step k reads
``past`` from set A and writes ``present`` into set B, step k+1 the other way round (a dense
(B, H, P, Dh) tensor at the start of a buffer is valid for any smaller shape). Row selection (beam
search, dropping finished rows) runs the ``kv_reorder`` engine from one set into the other. Each call
sets input shapes and tensor addresses and runs ``execute_async_v3`` on one CUDA stream; only ids,
the mask and the logits cross PCIe. Needs ``tensorrt`` and ``cuda-python`` (extra ``[tensorrt]``);
imports neither torch nor transformers.

One backend instance decodes one batch at a time (its buffers are shared state); give each serving
thread / Triton model instance its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spellfix.inference import layout

log = logging.getLogger(__name__)


def _import_cuda_runtime() -> Any:
    from spellfix.export.tensorrt_build import TensorRTUnavailableError

    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise TensorRTUnavailableError(
                "cuda-python is not installed; `pip install 'spellfix[tensorrt]'` on the GPU host"
            ) from None
    return cudart


def _check(result: Any) -> Any:
    """cuda-python returns (error, *values); raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class _DeviceBuffer:
    def __init__(self, cudart: Any, nbytes: int):
        self.cudart = cudart
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(_check(cudart.cudaMalloc(self.nbytes)))

    def free(self) -> None:
        if self.ptr:
            _check(self.cudart.cudaFree(self.ptr))
            self.ptr = 0


class _Engine:
    """An engine, its execution context and the names/dtypes of its I/O tensors."""

    def __init__(self, trt: Any, runtime: Any, path: Path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: engine missing; build engines on this GPU with spellfix.export.tensorrt_build.build_engines_for_export")
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"{path}: TensorRT could not load this engine (built with another TensorRT version or GPU model?); "
                "rebuild it on this machine with spellfix.export.tensorrt_build.build_engines_for_export"
            )
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in self.names}

    def max_input_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.engine.get_tensor_profile_shape(name, 0)[2])

    def max_output_shapes(self) -> dict[str, tuple[int, ...]]:
        for name in self.inputs:
            self.context.set_input_shape(name, self.max_input_shape(name))
        return {name: tuple(self.context.get_tensor_shape(name)) for name in self.outputs}


@dataclass
class _TrtState:
    mask: np.ndarray  # (B, S) host
    batch: int
    src_len: int
    past_len: int  # 0 before the first decoder step
    kv_set: int  # which buffer set holds the current self/cross K/V
    hidden_host: np.ndarray | None = None  # the encoder output on the host, once decode_block gathers rows


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, engine_dir: str | Path, *, device: int = 0):
        from spellfix.export.tensorrt_build import require_tensorrt

        trt = require_tensorrt()
        self.cudart = _import_cuda_runtime()
        _check(self.cudart.cudaSetDevice(device))
        engine_dir = Path(engine_dir)
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._trt_logger)
        self.engines = {g: _Engine(trt, runtime, engine_dir / f"{g}.engine") for g in layout.GRAPHS}
        self.stream = _check(self.cudart.cudaStreamCreate())
        dec = self.engines[layout.DECODER_WITH_PAST]
        self.self_names = [n for n in dec.inputs if n.startswith("past_key_values.") and ".decoder." in n]
        self.cross_names = [n for n in dec.inputs if n.startswith("past_key_values.") and ".encoder." in n]
        self.num_layers = len(self.self_names) // 2
        self.max_batch = dec.max_input_shape("input_ids")[0]
        self._allocate()

    # ---------------------------------------------------------------- buffers
    def _allocate(self) -> None:
        enc, dec, step, reorder = (self.engines[g] for g in layout.GRAPHS)
        self.buffers: dict[str, _DeviceBuffer] = {}

        def nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
            return int(np.prod(shape)) * dtype.itemsize

        for name in enc.inputs:
            self.buffers[f"enc/{name}"] = _DeviceBuffer(self.cudart, nbytes(enc.max_input_shape(name), enc.dtypes[name]))
        enc_out = enc.max_output_shapes()["encoder_hidden_states"]
        self.hidden_dim = enc_out[-1]
        self.buffers["hidden"] = _DeviceBuffer(self.cudart, nbytes(enc_out, enc.dtypes["encoder_hidden_states"]))
        # decode_block's rows of the encoder output (the encoder state itself stays intact)
        self.buffers["block_hidden"] = _DeviceBuffer(self.cudart, nbytes(enc_out, enc.dtypes["encoder_hidden_states"]))
        for engine_name, engine in (("dec", dec), ("step", step)):
            for name in ("input_ids", "encoder_attention_mask"):
                self.buffers[f"{engine_name}/{name}"] = _DeviceBuffer(self.cudart, nbytes(engine.max_input_shape(name), engine.dtypes[name]))
        self.buffers["row_index"] = _DeviceBuffer(self.cudart, nbytes(reorder.max_input_shape("row_index"), reorder.dtypes["row_index"]))
        # logits: first step (B, T, V) and later steps (B, 1, V) share one buffer
        dec_out, step_out = dec.max_output_shapes(), step.max_output_shapes()
        self.logits_dtype = step.dtypes["logits"]
        self.buffers["logits"] = _DeviceBuffer(self.cudart, max(nbytes(dec_out["logits"], dec.dtypes["logits"]), nbytes(step_out["logits"], self.logits_dtype)))
        # K/V: two sets; each buffer as large as the largest shape any engine reads or writes there
        self_present = [n.replace("past_key_values.", "present.") for n in self.self_names]
        self_bytes = max(
            [nbytes(dec_out[n], dec.dtypes[n]) for n in self_present]
            + [nbytes(step_out[n], step.dtypes[n]) for n in self_present]
            + [nbytes(step.max_input_shape(n), step.dtypes[n]) for n in self.self_names]
        )
        cross_bytes = max(nbytes(step.max_input_shape(n), step.dtypes[n]) for n in self.cross_names)
        reorder_out = reorder.max_output_shapes()
        self_bytes = max([self_bytes] + [nbytes(s, reorder.dtypes[n]) for n, s in reorder_out.items() if ".decoder." in n])
        cross_bytes = max([cross_bytes] + [nbytes(s, reorder.dtypes[n]) for n, s in reorder_out.items() if ".encoder." in n])
        for kv_set in (0, 1):
            for name in self.self_names:
                self.buffers[f"kv{kv_set}/{name}"] = _DeviceBuffer(self.cudart, self_bytes)
            for name in self.cross_names:
                self.buffers[f"kv{kv_set}/{name}"] = _DeviceBuffer(self.cudart, cross_bytes)
        self.vocab_size = step_out["logits"][-1]

    def close(self) -> None:
        for buffer in getattr(self, "buffers", {}).values():
            buffer.free()
        self.buffers = {}

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    # ---------------------------------------------------------------- helpers
    def _upload(self, key: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.cudart.cudaMemcpyAsync(self.buffers[key].ptr, array.ctypes.data, array.nbytes, kind, self.stream))
        _check(self.cudart.cudaStreamSynchronize(self.stream))  # `array` may be freed after return

    def _download(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.cudart.cudaMemcpyAsync(out.ctypes.data, self.buffers[key].ptr, out.nbytes, kind, self.stream))
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        return out

    def _execute(self, graph: str, shapes: dict[str, tuple[int, ...]], addresses: dict[str, int]) -> None:
        engine = self.engines[graph]
        for name, shape in shapes.items():
            if not engine.context.set_input_shape(name, shape):
                raise ValueError(f"{graph}: input {name} shape {shape} is outside the engine's profile")
        for name in engine.names:
            engine.context.set_tensor_address(name, addresses[name])
        if not engine.context.execute_async_v3(self.stream):
            raise RuntimeError(f"{graph}: TensorRT execution failed")

    def _kv(self, kv_set: int, name: str) -> int:
        return self.buffers[f"kv{kv_set}/{name}"].ptr

    def _check_batch(self, rows: int) -> None:
        if rows > self.max_batch:
            raise ValueError(f"{rows} decoder rows (queries x beams) exceed the engines' max batch {self.max_batch}; rebuild with a larger max_batch or lower batch_size")

    # ---------------------------------------------------------------- protocol
    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> _TrtState:
        batch, src_len = input_ids.shape
        self._check_batch(batch)
        enc = self.engines[layout.ENCODER]
        ids = input_ids.astype(enc.dtypes["input_ids"])
        mask = attention_mask.astype(enc.dtypes["attention_mask"])
        self._upload("enc/input_ids", ids)
        self._upload("enc/attention_mask", mask)
        self._execute(
            layout.ENCODER,
            {"input_ids": ids.shape, "attention_mask": mask.shape},
            {"input_ids": self.buffers["enc/input_ids"].ptr, "attention_mask": self.buffers["enc/attention_mask"].ptr, "encoder_hidden_states": self.buffers["hidden"].ptr},
        )
        return _TrtState(mask=np.ascontiguousarray(attention_mask, dtype=np.int64), batch=batch, src_len=src_len, past_len=0, kv_set=0)

    def decode_step(
        self, state: _TrtState, input_ids: np.ndarray, full_logits: bool = True, suppress_token: int | None = None
    ) -> tuple[np.ndarray, _TrtState]:
        graph = layout.DECODER if state.past_len == 0 else layout.DECODER_WITH_PAST
        engine = self.engines[graph]
        prefix = "dec" if graph == layout.DECODER else "step"
        ids = input_ids.astype(engine.dtypes["input_ids"])
        mask = state.mask.astype(engine.dtypes["encoder_attention_mask"])
        self._upload(f"{prefix}/input_ids", ids)
        self._upload(f"{prefix}/encoder_attention_mask", mask)
        shapes = {"input_ids": ids.shape, "encoder_attention_mask": mask.shape}
        addresses = {
            "input_ids": self.buffers[f"{prefix}/input_ids"].ptr,
            "encoder_attention_mask": self.buffers[f"{prefix}/encoder_attention_mask"].ptr,
            "logits": self.buffers["logits"].ptr,
        }
        if graph == layout.DECODER:
            out_set = state.kv_set
            shapes["encoder_hidden_states"] = (state.batch, state.src_len, self.hidden_dim)
            addresses["encoder_hidden_states"] = self.buffers["hidden"].ptr
            for name in (*self.self_names, *self.cross_names):
                addresses[name.replace("past_key_values.", "present.")] = self._kv(out_set, name)
        else:
            out_set = 1 - state.kv_set
            kv_shape = self.engines[graph].max_input_shape(self.self_names[0])
            for name in self.self_names:
                shapes[name] = (state.batch, kv_shape[1], state.past_len, kv_shape[3])
                addresses[name] = self._kv(state.kv_set, name)
                addresses[name.replace("past_key_values.", "present.")] = self._kv(out_set, name)
            for name in self.cross_names:
                shapes[name] = (state.batch, kv_shape[1], state.src_len, kv_shape[3])
                addresses[name] = self._kv(state.kv_set, name)
            # the cross K/V stay where they are: point the next step's set at the same data
            self._share_cross(state.kv_set, out_set)
        self._execute(graph, shapes, addresses)
        logits = self._download("logits", (state.batch, ids.shape[1], self.vocab_size), self.logits_dtype)[:, -1]
        new_state = _TrtState(state.mask, state.batch, state.src_len, state.past_len + ids.shape[1], out_set)
        return logits.astype(np.float32, copy=False), new_state

    def decode_block(self, state: _TrtState, input_ids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The first-step ``decoder`` engine over whole blocks (its profile covers ``tgt_len`` up to
        max_new_tokens); its present K/V land in the free buffer set and are ignored."""
        if state.past_len != 0:
            raise ValueError("decode_block needs the encoder state (before any decode_step)")
        engine = self.engines[layout.DECODER]
        hidden_key, mask = "hidden", state.mask
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            self._check_batch(len(rows))
            if state.hidden_host is None:
                enc = self.engines[layout.ENCODER]
                state.hidden_host = self._download("hidden", (state.batch, state.src_len, self.hidden_dim), enc.dtypes["encoder_hidden_states"])
            self._upload("block_hidden", state.hidden_host[rows])
            hidden_key, mask = "block_hidden", state.mask[rows]
        ids = input_ids.astype(engine.dtypes["input_ids"])
        mask = mask.astype(engine.dtypes["encoder_attention_mask"])
        self._upload("dec/input_ids", ids)
        self._upload("dec/encoder_attention_mask", mask)
        shapes = {"input_ids": ids.shape, "encoder_attention_mask": mask.shape, "encoder_hidden_states": (ids.shape[0], state.src_len, self.hidden_dim)}
        addresses = {
            "input_ids": self.buffers["dec/input_ids"].ptr,
            "encoder_attention_mask": self.buffers["dec/encoder_attention_mask"].ptr,
            "encoder_hidden_states": self.buffers[hidden_key].ptr,
            "logits": self.buffers["logits"].ptr,
        }
        scratch = 1 - state.kv_set
        for name in (*self.self_names, *self.cross_names):
            addresses[name.replace("past_key_values.", "present.")] = self._kv(scratch, name)
        self._execute(layout.DECODER, shapes, addresses)
        logits = self._download("logits", (ids.shape[0], ids.shape[1], self.vocab_size), self.logits_dtype)
        return logits.astype(np.float32, copy=False)

    def _share_cross(self, src_set: int, dst_set: int) -> None:
        """Make ``dst_set``'s cross K/V buffers the ones holding the data (swap the two sets' pointers)."""
        for name in self.cross_names:
            a, b = f"kv{src_set}/{name}", f"kv{dst_set}/{name}"
            self.buffers[a], self.buffers[b] = self.buffers[b], self.buffers[a]

    def select_rows(self, state: _TrtState, rows: np.ndarray) -> _TrtState:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        self._check_batch(len(rows))
        if state.past_len == 0:  # before the first step: gather the encoder output through the host, once
            enc = self.engines[layout.ENCODER]
            hidden = self._download("hidden", (state.batch, state.src_len, self.hidden_dim), enc.dtypes["encoder_hidden_states"])
            self._upload("hidden", hidden[rows])
            return _TrtState(state.mask[rows], len(rows), state.src_len, 0, state.kv_set)
        reorder = self.engines[layout.KV_REORDER]
        index = rows.astype(reorder.dtypes["row_index"])
        self._upload("row_index", index)
        out_set = 1 - state.kv_set
        kv_shape = reorder.max_input_shape(self.self_names[0])
        shapes: dict[str, tuple[int, ...]] = {"row_index": index.shape}
        addresses = {"row_index": self.buffers["row_index"].ptr}
        for name in self.self_names:
            shapes[name] = (state.batch, kv_shape[1], state.past_len, kv_shape[3])
        for name in self.cross_names:
            shapes[name] = (state.batch, kv_shape[1], state.src_len, kv_shape[3])
        for name in (*self.self_names, *self.cross_names):
            addresses[name] = self._kv(state.kv_set, name)
            addresses[name.replace("past_key_values.", "reordered.")] = self._kv(out_set, name)
        self._execute(layout.KV_REORDER, shapes, addresses)
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        return _TrtState(state.mask[rows], len(rows), state.src_len, state.past_len, out_set)
