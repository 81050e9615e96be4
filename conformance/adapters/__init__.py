"""Built-in implementations under test: "triton" (our kernels), "torch-eager" (model-code style loop),
and the deliberately broken ones of broken.py (each reproduces one shipped bug, for the suite's own tests)."""
