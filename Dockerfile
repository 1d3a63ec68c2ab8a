# zoo: docker build -t zoo . && docker run --rm zoo            (trains LeNet-5 on digits)
#      docker run --rm -v $PWD/outputs:/app/outputs zoo zoo-train model=mlp
# The image holds the tested set, requirements/lock.txt, installed with --require-hashes, except
# that torch and torchvision are the CPU builds of the locked versions: the lock's PyPI torch is
# the CUDA build, whose nvidia-* wheels would add gigabytes. The two CPU wheels are pinned by
# version, not by hash (their index, PyTorch's, is not one the lock is generated from). For CUDA,
# start from an nvidia/cuda image and install the whole lock instead:
#   pip install --require-hashes --no-deps -r requirements/lock.txt
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 MPLBACKEND=Agg
WORKDIR /app

# No build isolation: the one sdist in the lock (antlr4-python3-runtime, omegaconf's) is built
# with the setuptools the python:3.11 images ship, not with one fetched, unpinned, for the build.
COPY requirements/lock.txt requirements/lock.txt
COPY scripts/lock.py scripts/lock.py
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu \
        "torch==$(python scripts/lock.py --version-of torch)+cpu" \
        "torchvision==$(python scripts/lock.py --version-of torchvision)+cpu" \
 && python scripts/lock.py --without-cuda > /tmp/lock-cpu.txt \
 && pip install --require-hashes --no-deps --no-build-isolation -r /tmp/lock-cpu.txt \
 && rm /tmp/lock-cpu.txt
COPY pyproject.toml README.md ./
COPY configs ./configs
COPY benchmarks ./benchmarks
COPY src ./src
# The build backend (hatchling) came from the lock: no build isolation, so nothing unpinned is fetched.
RUN pip install --no-deps --no-build-isolation . && pip check

CMD ["zoo-train"]
