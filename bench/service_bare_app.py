"""The baselines of the job-creation benchmark, served by the same uvicorn with the same flags as the API.

* ``POST /bare`` only reads the body: HTTP + multipart transfer, nothing else.
* ``POST /bare-s3`` parses the same multipart body and streams each file part into the same S3
  bucket as the API (``IPFVR_S3_*``): the unavoidable work of job creation.

The ratios against them show what job creation (auth, sniffing, the atomic create in Redis, the
queue message, our S3 streaming) costs on top.
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from jobs.settings import Settings
from jobs.storage import Storage

app = FastAPI()
settings = Settings()
s3 = Storage.from_settings(settings).client  # the API's boto3 client; plain boto3 calls below


@app.post("/bare")
async def bare(request: Request) -> JSONResponse:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"received": size}, status_code=202)


@app.post("/bare-s3")
async def bare_s3(request: Request) -> JSONResponse:
    size = 0
    async with request.form() as form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                key = f"bare/{secrets.token_hex(8)}/{name}"
                await run_in_threadpool(s3.upload_fileobj, value.file, settings.s3_bucket, key)
                size += value.size or 0
    return JSONResponse({"received": size}, status_code=202)
