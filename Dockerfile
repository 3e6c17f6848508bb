# One image for every process of the service (web, worker, beat, flower, migrate) and for kubesim;
# docker-compose.yml picks the command. Dependencies are the pinned requirements.txt.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Requirements first, so editing the code does not reinstall every dependency.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# The service never needs root; a fixed uid keeps volume permissions predictable.
RUN useradd --create-home --uid 10001 app
USER app

EXPOSE 8000 5555
CMD ["gunicorn", "web.wsgi:app", "--config", "python:web.gunicorn_config", "--bind", "0.0.0.0:8000", \
     "--workers", "2", "--threads", "4", \
     "--graceful-timeout", "5", "--access-logfile", "-"]
