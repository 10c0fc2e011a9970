"""Side-by-side benchmarks behind ``spellfix bench``; each writes benchmarks/results/<name>.{json,md}.

Submodules are imported on demand (they pull torch, onnxruntime, ctranslate2 ...):
``spellfix.bench.infer.run_infer_benchmark`` — inference latency/throughput vs generate and CTranslate2.
"""
