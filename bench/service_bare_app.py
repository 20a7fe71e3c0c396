"""The baseline of the job-creation benchmark: a bare FastAPI endpoint that only reads the body.

Served by the same uvicorn with the same flags as the real API, so the ratio shows what job
creation (auth, streaming to S3, the atomic create in Redis, the queue message) costs on top of
HTTP + multipart transfer.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/bare")
async def bare(request: Request) -> JSONResponse:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"received": size}, status_code=202)
