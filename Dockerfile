# One image for the web server and the GPU workers (docker-compose.yml starts both).
#   docker build -t ctspine1k-viewer .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t ctspine1k-viewer:cpu .
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=ctspine_site.settings.production \
    CTSPINE_DATA_ROOT=/data \
    CTSPINE_CACHE_DIR=/cache \
    CTSPINE_MEDIA_DIR=/media \
    nnUNet_raw=/tmp/nnunet/raw \
    nnUNet_preprocessed=/tmp/nnunet/preprocessed \
    nnUNet_results=/models

WORKDIR /app

# PyTorch from PyPI is the CUDA build on x86-64 Linux, which the GPU worker needs; a CPU-only
# image is about 4 GB smaller: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_URL=""
COPY requirements.txt requirements-ml.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==2.13.0" --index-url "$TORCH_INDEX_URL"; \
    fi \
 && pip install -r requirements.txt -r requirements-ml.txt

COPY . .
RUN useradd --uid 1000 --create-home ctspine \
 && mkdir -p /data /cache /media /models \
 && chown ctspine:ctspine /cache /media \
 && SECRET_KEY="$(python -c "import secrets; print(secrets.token_hex(32))")" \
    python manage.py collectstatic --noinput -v 0

USER ctspine
EXPOSE 8000
# The web server; the worker service overrides the command (see docker-compose.yml).
# gunicorn.conf.py: threaded workers, WEB_WORKERS processes of WEB_THREADS threads, port 8000.
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn -c gunicorn.conf.py ctspine_site.wsgi"]
