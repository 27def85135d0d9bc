"""The `t2i serve` web app: a page to try the model, and a JSON/PNG API under it.

    POST /generate        {"caption": "...", "n": 4, "seed": 0}   (or "captions": [...])
                          -> {"images": [{"caption", "png": base64, "judge"?}], ...}
    GET  /generate.png?caption=...&n=4&seed=0  -> one PNG grid (caption left, samples right)
    GET  /swap?caption=...                     -> the caption with its two colours exchanged
    GET  /info                                 -> what is served (resolution, encoder, limits)
    GET  /docs                                 -> OpenAPI page

Bad input is a 4xx with a message (422 for a request that breaks the schema, 400 for one the
model refuses); generation runs one request at a time (the CPU has no room for two).
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field, model_validator

from t2i.grids import caption_grid, png_bytes
from t2i.pipeline import GenerationPipeline
from t2i.serve.captions import swapped_caption
from t2i.serve.judge import Judge, load_judge

STATIC = Path(__file__).with_name("static")
MAX_CAPTION_CHARS = 500


class GenerateRequest(BaseModel):
    caption: str | None = Field(None, description="one caption (or use `captions`)",
                                examples=["a red flower with a yellow stem"])
    captions: list[str] | None = Field(None, description="several captions; images come caption-major")
    n: int = Field(1, ge=1, description="images per caption")
    seed: int = Field(0, ge=0, lt=2**32, description="noise seed: the same seed gives the same images")

    @model_validator(mode="after")
    def one_kind_of_caption(self) -> GenerateRequest:
        if (self.caption is None) == (self.captions is None):
            raise ValueError("give exactly one of 'caption' (a string) or 'captions' (a list of strings)")
        texts = [self.caption] if self.caption is not None else self.captions or []
        if not texts:
            raise ValueError("'captions' is empty: give at least one caption")
        for text in texts:
            if not text.strip():
                raise ValueError("a caption is empty: describe the image, e.g. \"a red flower with a yellow stem\"")
            if len(text) > MAX_CAPTION_CHARS:
                raise ValueError(f"a caption is {len(text)} characters long; at most {MAX_CAPTION_CHARS}")
        return self

    def texts(self) -> list[str]:
        return [c.strip() for c in ([self.caption] if self.caption is not None else self.captions or [])]


def png_b64(image: np.ndarray) -> str:
    """uint8 (R, R, 3) -> base64 PNG text."""
    return base64.b64encode(png_bytes(Image.fromarray(image))).decode("ascii")


class Server:
    """The loaded model, its limits and the judge; one generation at a time."""

    def __init__(self, pipe: GenerationPipeline, judge: Judge | None, source: str) -> None:
        self.pipe, self.judge, self.source = pipe, judge, source
        self.max_n = int(getattr(pipe, "max_per_caption", 64))
        self.max_images = int(pipe.max_images)
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {"source": self.source, "resolution": self.pipe.resolution, "encoder": self.pipe.encoder_name,
                "step": getattr(self.pipe, "step", None),
                "max_n": self.max_n, "max_images": self.max_images, "judge": self.judge is not None}

    def generate(self, captions: list[str], n: int, seed: int) -> np.ndarray:
        """uint8 (len(captions) * n, R, R, 3), caption-major; 400 for what the model refuses."""
        if n > self.max_n:
            raise HTTPException(422, f"n must be between 1 and {self.max_n} images per caption, got {n}")
        if len(captions) * n > self.max_images:
            raise HTTPException(422, f"{len(captions)} captions x {n} = {len(captions) * n} images; at most "
                                     f"{self.max_images} per request")
        from t2i.text import EncoderError

        try:
            with self._lock:
                return self.pipe.generate_array(captions, seed=seed, n=n)
        except (ValueError, TypeError) as exc:
            raise HTTPException(400, str(exc)) from exc
        except EncoderError as exc:  # the model's encoder cannot run here: not the request's fault
            raise HTTPException(503, f"the model's text encoder failed: {exc}") from exc


def _routes(app: FastAPI, server: Server) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/info", summary="What is served: resolution, encoder, limits, whether a judge reads images")
    def info() -> dict[str, Any]:
        return server.info()

    @app.get("/swap", summary="The caption with its two colours exchanged (null when it has fewer than two)")
    def swap(caption: str = Query(..., max_length=MAX_CAPTION_CHARS)) -> dict[str, str | None]:
        return {"caption": caption, "swapped": swapped_caption(caption)}

    @app.post("/generate", summary="Images for one or more captions, as base64 PNGs")
    def generate(req: GenerateRequest) -> dict[str, Any]:
        captions = req.texts()
        images = server.generate(captions, req.n, req.seed)  # (C*n, R, R, 3)
        per_image = [c for c in captions for _ in range(req.n)]
        reads = server.judge.read(images, per_image) if server.judge else [None] * len(per_image)
        return {
            "n": req.n, "seed": req.seed, "resolution": int(images.shape[1]), "captions": captions,
            "swapped": {c: swapped_caption(c) for c in captions},
            "images": [{"caption": c, "index": i % req.n, "png": png_b64(img), **({"judge": r} if r else {})}
                       for i, (c, img, r) in enumerate(zip(per_image, images, reads))],
        }

    @app.get("/generate.png", summary="One PNG grid: the caption on the left, n samples on the right",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def generate_png(caption: str = Query(..., min_length=1, max_length=MAX_CAPTION_CHARS),
                     n: int = Query(4, ge=1), seed: int = Query(0, ge=0, lt=2**32)) -> Response:
        if not caption.strip():
            raise HTTPException(422, "the caption is empty: describe the image, e.g. \"a red flower with a yellow stem\"")
        images = server.generate([caption.strip()], n, seed)
        grid = caption_grid(images[None], [caption.strip()])  # (1, n, R, R, 3)
        return Response(png_bytes(grid), media_type="image/png")


def create_app(source: str | Path | GenerationPipeline, device: str = "auto", judge: str = "auto") -> FastAPI:
    """The app for a model source (models dir, ``runs:/...``, ``models:/name@alias``) or a loaded
    pipeline. A source that does not load raises here (FileNotFoundError / ValueError), before
    any port is opened. ``judge`` is a ``t2i.serve.judge.load_judge`` spec: "auto" finds the
    evaluation's classifier beside the source (a loaded pipeline has no source: no judge)."""
    loaded = isinstance(source, GenerationPipeline)
    pipe = source if loaded else GenerationPipeline.from_pretrained(source, device=device)
    name = repr(pipe) if loaded else str(source)
    server = Server(pipe, load_judge(judge, pipe.device, None if loaded else source), name)
    app = FastAPI(title="t2i", version="0.1.0",
                  description="Text-to-image GAN: type a caption, get images. Synthetic models also show what "
                              "the evaluation's attribute classifier reads in each image.")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _routes(app, server)
    app.state.server = server
    return app
