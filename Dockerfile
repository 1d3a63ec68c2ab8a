# zoo: docker build -t zoo . && docker run --rm zoo            (trains LeNet-5 on digits)
#      docker run --rm -v $PWD/outputs:/app/outputs zoo zoo-train model=mlp
# The CPU wheels of torch keep the image small; for CUDA, start from an nvidia/cuda
# image or drop the index URL and run with --gpus all.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 MPLBACKEND=Agg
WORKDIR /app

RUN pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY configs ./configs
COPY benchmarks ./benchmarks
COPY src ./src
RUN pip install .

CMD ["zoo-train"]
