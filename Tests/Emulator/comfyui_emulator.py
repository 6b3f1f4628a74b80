#!/usr/bin/env python3
"""ComfyUI 0.3.64 emulator for the Comfy Gateway tests and benchmarks.

It speaks the wire protocol of ComfyUI's own server.py and execution.py (HTTP API,
WebSocket events, binary frames, validation errors, queue/history semantics),
but "executes" a small fixed set of nodes without any model: every node is a
no-op except the ones that produce observable effects (sampler progress, files,
binary image frames). Single file, Python 3.11, aiohttp + stdlib only.

Run
---
    python3 comfyui_emulator.py --port P [--host 127.0.0.1] [--data-dir DIR]
        [--preview-method none|latent2rgb] [--node-delay-ms N] [--sampler-step-ms N]
        [--fail-node-class CLASS] [--hang] [--refuse-ws] [--http-status CODE] [--verbose]

``--port 0`` picks a free port. Once listening, exactly one line ``READY <port>``
is printed to stdout (flushed). Logs go to stderr (quiet unless ``--verbose``).
``--data-dir`` (default: a fresh temp dir, removed at exit) holds ``input/``,
``output/`` and ``temp/``. SIGTERM/SIGINT exit promptly.

ComfyUI API (every route also exists under the ``/api`` prefix)
---------------------------------------------------------------
POST /prompt, GET /prompt, GET /queue, POST /queue, POST /interrupt,
GET /history, GET /history/{id}, POST /history, GET|HEAD /view (Range via
aiohttp FileResponse), POST /upload/image, GET /system_stats (0.3.64),
GET /object_info, GET /object_info/{class}, GET /features, GET /ws.
The handlers are ports of ComfyUI's server.py/execution.py, so the edge cases
are the real ones: JSON is Python ``json.dumps`` output, malformed JSON gives
aiohttp's 500 text/plain "Server got itself in trouble", POST /queue and
/interrupt answer 200 with an empty body and no Content-Type, the ``number``
counter increments on every parsed POST /prompt, ``prompt_id``/``front``/
``number``/``extra_data``/``partial_execution_targets`` are honoured, a
prompt with some valid outputs answers 200 with ``node_errors`` and runs only
the valid outputs. Origin check (server.py's): when Host is loopback and an
Origin header is present, Origin's host (host:port if both carry a port) must
equal Host's, else 403 with an empty body.

Known nodes: LoadImage, ImageInvert, ImageScale, ImageBlur, EmptyImage,
CheckpointLoaderSimple (ckpt list: ``--checkpoints``, default ["emulator.safetensors"];
GET /models and /models/{folder} list them), CLIPTextEncode,
EmptyLatentImage, VAEEncode, VAEDecode, KSampler, KSamplerAdvanced,
RandomNoise, SaveImage, PreviewImage, SaveImageWebsocket (the last three are
output nodes). Input specs (types, min/max, combo lists) are ComfyUI's.

Execution model (one prompt at a time, heap order like ComfyUI: ``number``,
``front: true`` jumps the queue)
---------------------------------------------------------------------------
* Node order follows ComfyUI's ExecutionList (output-first heuristics).
* Caching is ComfyUI's default "classic" cache: a node is cached when its
  signature (class, inputs, recursively the upstream signatures, LoadImage's
  file sha256) equals one from a previous prompt AND that entry survived the
  previous prompt (after each prompt start, entries not used by the new prompt
  are dropped). So A, A -> second run cached; A, B, A -> third run only reuses
  what B shared. SaveImageWebsocket is never cached. Cached upstream nodes get
  no executing/progress; a cached SaveImage/PreviewImage re-sends ``executed``
  with the old filenames and writes nothing.
* WebSocket order per prompt: status(put), status(get), execution_start,
  execution_cached, per node: progress_state(running) -> executing ->
  [progress_state + progress + binary ...] -> [executed] ->
  progress_state(finished) ..., execution_success, status, executing null.
  KSampler(Advanced) sends progress value 1..steps (max steps) with its node id;
  SaveImageWebsocket sends progress 0..n-1 (max n) and one image per batch item.
  With ``supports_preview_metadata`` negotiated (first client message) image
  frames are type 4 ``[u32 4][u32 json_len][json][bytes]`` sent BEFORE the
  ``progress`` message; otherwise type 1 ``[u32 1][u32 2=PNG|1=JPEG][bytes]``
  sent AFTER it. Latent previews (JPEG, format 1) are sent after each sampler
  step only with preview_method latent2rgb.
* Prompts without ``client_id``: only progress/progress_state/binary frames
  (always type 1)/execution_interrupted are broadcast to every socket.
* One socket per clientId; a second connection replaces the first, and when
  the older one closes it pops the entry and orphans the newer one (ComfyUI
  bug, reproduced). A socket connecting mid-run with the running prompt's
  clientId gets status(sid) then ``{"type": "executing", "data": {"node": N}}``.
* Interrupts (global, or targeted at the running prompt_id) take effect at the
  next node start or sampler/SaveImageWebsocket progress step:
  execution_interrupted -> status -> executing null.
* LoadImage of a file that is not an image fails at run time with
  ``PIL.UnidentifiedImageError`` like ComfyUI; a missing file fails validation.

Deterministic images (the contract the gateway tests rely on)
-------------------------------------------------------------
Every image the emulator outputs (SaveImage/PreviewImage files and
SaveImageWebsocket frames) is a valid 16x16 8-bit RGB PNG carrying a tEXt chunk
with keyword ``comfy-emulator`` whose value is
``json.dumps(meta, sort_keys=True, separators=(",", ":"))`` (ASCII) of::

    {"node": <output node id>, "class_type": <output class>,
     "texts": [every CLIPTextEncode "text" upstream, in node id order],
     "seeds": [every KSampler "seed" / KSamplerAdvanced|RandomNoise "noise_seed"
               upstream, in node id order],
     "image_sha256": <hex sha256 of the first (node id order) upstream LoadImage
                      file's bytes, or null>,
     "batch_index": i}

The pixels are ``shake_256(sha256(that json)).digest(768)``. Node id order is
numeric for integer ids, then lexicographic. Batches: EmptyImage /
EmptyLatentImage ``batch_size`` propagates downstream; one file / frame per
image. SaveImage and PreviewImage PNGs additionally carry ComfyUI's ``prompt``
tEXt chunk (``json.dumps(prompt)``, LoadImage nodes with their ``is_changed``
hash) and one chunk per ``extra_data.extra_pnginfo`` key, so identical prompts
give identical bytes. SaveImage writes ``output/<subfolder of prefix>/
<name>_00001_.png`` (counter continues from the files on disk); PreviewImage
writes ``temp/ComfyUI_temp_xxxxx_0000N_.png``. Latent previews are fake JPEGs:
``FF D8 FF E0 ...(JFIF APP0, COM json, APP15 filler)... FF D9``, not decodable.

Fault injection / control API (not under /api, exempt from faults and Origin)
----------------------------------------------------------------------------
POST /emulator/config  JSON object merged into the config; answers the full
                       config (GET answers it too). Unknown keys -> 400.
    node_delay_ms        int, sleep per executed (non-cached) node       [0]
    sampler_step_ms      int, sleep per sampler step                     [0]
    preview_method       "none" | "latent2rgb"                        ["none"]
    fail_node_class      class_type whose execution raises RuntimeError
                         "emulated failure in <class>" -> execution_error [null]
    hang                 true: the worker takes nothing from the queue (prompts
                         stay pending, no history); false resumes         [false]
    drop_ws_after_binary N: after N more binary frames have been written (each
                         socket write counts), every WebSocket is aborted (TCP
                         closed, no close frame), then the key resets to null.
                         The prompt keeps running and writes history     [null]
    http_status          e.g. 500: every non-/emulator route answers that status
                         with a text/plain body (500: aiohttp's "500 Internal
                         Server Error\\n\\nServer got itself in trouble" plus
                         Connection: close; others "<code>: <reason>")   [null]
    http_status_paths    list of paths http_status is limited to, e.g.
                         ["/prompt"] (a handler that raises while
                         /system_stats and /ws are fine); null: all  [null]
    refuse_ws            true: /ws answers 503 "503: Service Unavailable" [false]
    checkpoints          list of checkpoint names (CheckpointLoaderSimple's
                         combo, GET /models/checkpoints) [["emulator.safetensors"]]
    image_size           side of the output images in pixels (benchmarks of
                         large images; the tests' contract is 16)            [16]
    queue_delay_ms       int, GET /queue sleeps this long, then answers the
                         queue as it is then (a loaded server's late answer) [0]
    drop_ws_on_upload_ms N: the next POST /upload/image aborts every WebSocket,
                         then answers after N ms (a socket that dropped and was
                         opened anew while an upload ran); then the key resets
                         to null                                          [null]
POST /emulator/restart Simulated restart: aborts every WebSocket, cancels the
                       running prompt (it gets no history), clears queue,
                       history, caches, the number counter, temp/ and the stats.
                       Files in input/ and output/ and the config are kept.
                       Answers {"restarted": true} once done.
GET  /emulator/stats   {"prompts_received": POST /prompt requests (any outcome),
                        "prompts_accepted": those queued,
                        "last_prompt_at": epoch seconds of the latest POST
                                          /prompt (for latency benchmarks),
                        "prompts_executed": prompts finished (any status),
                        "interrupts": [POST /interrupt bodies, parsed JSON or
                                       raw text],
                        "queue_deletes": [ids from POST /queue delete],
                        "queue_clears": n, "history_deletes": [ids],
                        "history_delete_requests": POST /history with "delete",
                        "history_clears": n,
                        "http_status_answers": requests answered with
                                               http_status (not counted above),
                        "sockets": [clientIds registered (would receive)],
                        "open_sockets": [clientIds of all open sockets, incl.
                                         replaced/orphaned ones],
                        "queue_pending": n, "running": prompt_id or null,
                        "uploads": successful uploads, "binary_frames": n,
                        "max_in_flight": the most prompts queued and running
                                         at once,
                        "ws_refusals": /ws upgrades refused (refuse_ws),
                        "ws_refused_open": connections of those the client
                                           has not closed}
GET  /emulator/executions  {"executions": [{"prompt_id": id, "queued": tq,
                        "start": t0, "end": t1}, ...]}: when each prompt was
                        queued, when the worker took it from the queue and
                        when it finished (epoch seconds,
                        any outcome, oldest first, the latest 100000). For
                        benchmarks (job time, a backend's idle gaps). Cleared
                        by /emulator/restart like the stats.

Not emulated: real image processing (sizes are always 16x16; ImageScale etc.
do nothing), /view ``preview=`` (returns fake bytes with the right
Content-Type), progress text frames (type 3), custom nodes, subgraphs, models.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import json
import logging
import mimetypes
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import urllib.parse
import uuid
import ipaddress
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable

from aiohttp import WSMsgType, web

log = logging.getLogger("comfyui-emulator")

COMFYUI_VERSION = "0.3.64"
MAX_RESOLUTION = 16384
MAX_UPLOAD_SIZE = 104857600
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
MAXIMUM_HISTORY_SIZE = 10000
MAX_EXECUTION_RECORDS = 100000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
CHECKPOINTS = ["emulator.safetensors"]
IMAGE_SIZE = 16

EVENT_PREVIEW_IMAGE = 1
EVENT_PREVIEW_IMAGE_WITH_METADATA = 4
FORMAT_CODES = {"JPEG": 1, "PNG": 2}
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}

DEFAULT_CONFIG: dict[str, Any] = {
    "node_delay_ms": 0,
    "sampler_step_ms": 0,
    "preview_method": "none",
    "fail_node_class": None,
    "hang": False,
    "drop_ws_after_binary": None,
    "http_status": None,
    "http_status_paths": None,
    "refuse_ws": False,
    "checkpoints": list(CHECKPOINTS),
    "image_size": IMAGE_SIZE,
    "queue_delay_ms": 0,
    "drop_ws_on_upload_ms": None,
}

# folder_paths.folder_names_and_paths keys (ComfyUI 0.3.64), for GET /models.
MODEL_FOLDERS = ["checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                 "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
                 "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders", "custom_nodes"]

SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp",
    "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
    "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
              "normal", "linear_quadratic", "kl_optimal"]


# ---------------------------------------------------------------------------
# Synthetic images
# ---------------------------------------------------------------------------

def compact_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(width: int, height: int, channels: int, pixels: bytes,
               texts: list[tuple[str, str]] = ()) -> bytes:
    """8-bit PNG (channels 1=gray, 3=RGB, 4=RGBA) with optional tEXt chunks."""
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    stride = width * channels
    raw = b"".join(b"\x00" + pixels[y * stride:(y + 1) * stride] for y in range(height))
    out = [b"\x89PNG\r\n\x1a\n",
           png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))]
    for key, value in texts:
        out.append(png_chunk(b"tEXt", key.encode("latin-1", "replace")[:79] + b"\x00"
                             + value.encode("latin-1", "replace")))
    out.append(png_chunk(b"IDAT", zlib.compress(raw, 6)))
    out.append(png_chunk(b"IEND", b""))
    return b"".join(out)


def decode_png(data: bytes) -> tuple[int, int, int, bytes] | None:
    """Decode a non-interlaced 8-bit gray/RGB/GA/RGBA PNG; None if unsupported."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        pos += 12 + length
    if header is None:
        return None
    width, height, depth, color_type, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color_type)
    if depth != 8 or channels is None or interlace != 0:
        return None
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error:
        return None
    return width, height, channels, unfilter_png(raw, width, height, channels)


def unfilter_png(raw: bytes, width: int, height: int, bpp: int) -> bytes:
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = prev[i]
            upleft = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + left) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + up) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif ftype == 4:
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else upleft)
                line[i] = (line[i] + pred) & 0xFF
        out += line
        prev = line
    return bytes(out)


def emulator_png(meta: dict, extra_texts: list[tuple[str, str]] = (), size: int = IMAGE_SIZE) -> bytes:
    """The deterministic output image: pixels and tEXt derive from ``meta``."""
    text = compact_json(meta)
    digest = hashlib.sha256(text.encode()).digest()
    pixels = hashlib.shake_256(digest).digest(size * size * 3)
    return encode_png(size, size, 3, pixels, [("comfy-emulator", text), *extra_texts])


def fake_jpeg(info: dict) -> bytes:
    """A few hundred bytes that look like a JPEG (SOI/APP0 ... EOI), not decodable."""
    comment = compact_json(info).encode()[:60000]
    filler = hashlib.shake_256(comment).digest(256)
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    com = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    app15 = b"\xff\xef" + struct.pack(">H", len(filler) + 2) + filler
    return b"\xff\xd8" + app0 + com + app15 + b"\xff\xd9"


def fake_webp(seed: bytes) -> bytes:
    payload = b"VP8L" + struct.pack("<I", 32) + hashlib.shake_256(seed).digest(32)
    return b"RIFF" + struct.pack("<I", 4 + len(payload)) + b"WEBP" + payload


IMAGE_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
                b"II*\x00", b"MM\x00*")


def looks_like_image(data: bytes) -> bool:
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return True
    return any(data.startswith(m) for m in IMAGE_MAGICS)


def binary_frame(event: int, payload: bytes) -> bytes:
    return struct.pack(">I", event) + payload


def legacy_image_frame(image_format: str, image: bytes) -> bytes:
    return binary_frame(EVENT_PREVIEW_IMAGE, struct.pack(">I", FORMAT_CODES[image_format]) + image)


def metadata_image_frame(image_format: str, image: bytes, metadata: dict) -> bytes:
    metadata = {**metadata, "image_type": MIME_TYPES[image_format]}
    blob = json.dumps(metadata).encode()
    return binary_frame(EVENT_PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", len(blob)) + blob + image)


# ---------------------------------------------------------------------------
# Node catalogue
# ---------------------------------------------------------------------------

@dataclass
class NodeDef:
    name: str
    required: dict | Callable[["Emulator"], dict]
    returns: tuple = ()
    output_node: bool = False
    category: str = "sd"
    display_name: str | None = None
    description: str = ""
    python_module: str = "nodes"
    hidden: dict = field(default_factory=dict)
    output_tooltips: tuple | None = None
    validate_inputs: tuple = ()  # input names handed to VALIDATE_INPUTS

    def input_types(self, emu: "Emulator") -> dict:
        required = self.required(emu) if callable(self.required) else self.required
        types = {"required": required}
        if self.hidden:
            types["hidden"] = self.hidden
        return types

    def info(self, emu: "Emulator") -> dict:
        types = self.input_types(emu)
        info = {
            "input": types,
            "input_order": {k: list(v.keys()) for k, v in types.items()},
            "output": list(self.returns),
            "output_is_list": [False] * len(self.returns),
            "output_name": list(self.returns),
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        if self.output_tooltips is not None:
            info["output_tooltips"] = list(self.output_tooltips)
        return info


def _int(default, lo, hi, **extra):
    return ("INT", {"default": default, "min": lo, "max": hi, **extra})


SAVE_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def build_catalogue() -> dict[str, NodeDef]:
    defs = [
        NodeDef("LoadImage", lambda emu: {"image": (emu.input_files(), {"image_upload": True})},
                ("IMAGE", "MASK"), category="image", display_name="Load Image",
                validate_inputs=("image",)),
        NodeDef("ImageInvert", {"image": ("IMAGE",)}, ("IMAGE",), category="image",
                display_name="Invert Image"),
        NodeDef("ImageScale", {
            "image": ("IMAGE",),
            "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],),
            "width": _int(512, 0, MAX_RESOLUTION, step=1),
            "height": _int(512, 0, MAX_RESOLUTION, step=1),
            "crop": (["disabled", "center"],)},
            ("IMAGE",), category="image/upscaling", display_name="Upscale Image"),
        NodeDef("ImageBlur", {
            "image": ("IMAGE",),
            "blur_radius": _int(1, 1, 31, step=1),
            "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1})},
            ("IMAGE",), category="image/postprocessing", display_name="Image Blur",
            python_module="comfy_extras.nodes_post_processing"),
        NodeDef("EmptyImage", {
            "width": _int(512, 1, MAX_RESOLUTION, step=1),
            "height": _int(512, 1, MAX_RESOLUTION, step=1),
            "batch_size": _int(1, 1, 4096),
            "color": _int(0, 0, 0xFFFFFF, step=1, display="color")},
            ("IMAGE",), category="image"),
        NodeDef("CheckpointLoaderSimple", lambda emu: {
            "ckpt_name": (list(emu.config["checkpoints"]), {"tooltip": "The name of the checkpoint (model) to load."})},
            ("MODEL", "CLIP", "VAE"), category="loaders", display_name="Load Checkpoint",
            description="Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
            output_tooltips=("The model used for denoising latents.",
                             "The CLIP model used for encoding text prompts.",
                             "The VAE model used for encoding and decoding images to and from latent space.")),
        NodeDef("CLIPTextEncode", {
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}),
            "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."})},
            ("CONDITIONING",), category="conditioning", display_name="CLIP Text Encode (Prompt)",
            description="Encodes a text prompt using a CLIP model into an embedding that can be used "
                        "to guide the diffusion model towards generating specific images.",
            output_tooltips=("A conditioning containing the embedded text used to guide the diffusion model.",)),
        NodeDef("EmptyLatentImage", {
            "width": _int(512, 16, MAX_RESOLUTION, step=8, tooltip="The width of the latent images in pixels."),
            "height": _int(512, 16, MAX_RESOLUTION, step=8, tooltip="The height of the latent images in pixels."),
            "batch_size": _int(1, 1, 4096, tooltip="The number of latent images in the batch.")},
            ("LATENT",), category="latent", display_name="Empty Latent Image",
            description="Create a new batch of empty latent images to be denoised via sampling.",
            output_tooltips=("The empty latent image batch.",)),
        NodeDef("VAEEncode", {"pixels": ("IMAGE",), "vae": ("VAE",)}, ("LATENT",),
                category="latent", display_name="VAE Encode"),
        NodeDef("VAEDecode", {
            "samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
            "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."})},
            ("IMAGE",), category="latent", display_name="VAE Decode",
            description="Decodes latent images back into pixel space images.",
            output_tooltips=("The decoded image.",)),
        NodeDef("KSampler", {
            "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
            "seed": _int(0, 0, 0xffffffffffffffff, control_after_generate=True,
                         tooltip="The random seed used for creating the noise."),
            "steps": _int(20, 1, 10000, tooltip="The number of steps used in the denoising process."),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (SAMPLERS,),
            "scheduler": (SCHEDULERS,),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})},
            ("LATENT",), category="sampling", display_name="KSampler",
            description="Uses the provided model, positive and negative conditioning to denoise the latent image.",
            output_tooltips=("The denoised latent.",)),
        NodeDef("KSamplerAdvanced", {
            "model": ("MODEL",),
            "add_noise": (["enable", "disable"],),
            "noise_seed": _int(0, 0, 0xffffffffffffffff, control_after_generate=True),
            "steps": _int(20, 1, 10000),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (SAMPLERS,),
            "scheduler": (SCHEDULERS,),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "start_at_step": _int(0, 0, 10000),
            "end_at_step": _int(10000, 0, 10000),
            "return_with_leftover_noise": (["disable", "enable"],)},
            ("LATENT",), category="sampling", display_name="KSampler (Advanced)"),
        NodeDef("RandomNoise", {"noise_seed": _int(0, 0, 0xffffffffffffffff, control_after_generate=True)},
                ("NOISE",), category="sampling/custom_sampling/noise",
                python_module="comfy_extras.nodes_custom_sampler"),
        NodeDef("SaveImage", {
            "images": ("IMAGE", {"tooltip": "The images to save."}),
            "filename_prefix": ("STRING", {
                "default": "ComfyUI",
                "tooltip": "The prefix for the file to save. This may include formatting information "
                           "such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."})},
            (), output_node=True, category="image", display_name="Save Image",
            description="Saves the input images to your ComfyUI output directory.", hidden=SAVE_HIDDEN),
        NodeDef("PreviewImage", {"images": ("IMAGE",)}, (), output_node=True, category="image",
                display_name="Preview Image", hidden=SAVE_HIDDEN),
        NodeDef("SaveImageWebsocket", {"images": ("IMAGE",)}, (), output_node=True,
                category="api/image", python_module="custom_nodes.websocket_image_save"),
    ]
    return {d.name: d for d in defs}


NODES = build_catalogue()
SEED_INPUTS = {"KSampler": "seed", "KSamplerAdvanced": "noise_seed", "RandomNoise": "noise_seed"}
BATCH_SOURCES = {"EmptyImage", "EmptyLatentImage"}


# ---------------------------------------------------------------------------
# Graph helpers
# ---------------------------------------------------------------------------

def is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and isinstance(value[0], str) and isinstance(value[1], int))


def node_id_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def ancestors(prompt: dict, node_id: str) -> set[str]:
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for value in prompt[stack.pop()].get("inputs", {}).values():
            if is_link(value) and value[0] in prompt and value[0] not in seen:
                seen.add(value[0])
                stack.append(value[0])
    seen.discard(node_id)
    return seen


def batch_size(prompt: dict, node_id: str, memo: dict | None = None, depth: int = 0) -> int:
    memo = {} if memo is None else memo
    if node_id in memo or depth > 500:
        return memo.get(node_id, 1)
    node = prompt[node_id]
    inputs = node.get("inputs", {})
    if node.get("class_type") in BATCH_SOURCES:
        size = max(1, int(inputs.get("batch_size", 1)))
    else:
        size = 1
        for value in inputs.values():
            if is_link(value) and value[0] in prompt:
                size = max(size, batch_size(prompt, value[0], memo, depth + 1))
    memo[node_id] = size
    return size


def compute_signatures(prompt: dict, is_changed: dict) -> dict[str, str]:
    """Cache keys like ComfyUI's CacheKeySetInputSignature (node id excluded)."""
    memo: dict[str, str] = {}

    def sig(node_id: str, stack: frozenset) -> str:
        if node_id in memo:
            return memo[node_id]
        if node_id not in prompt or node_id in stack:
            return "nan-" + uuid.uuid4().hex  # never equal: uncacheable
        node = prompt[node_id]
        parts: list = [node.get("class_type"), is_changed.get(node_id, False)]
        for key in sorted(node.get("inputs", {})):
            value = node["inputs"][key]
            if is_link(value):
                parts.append([key, "ANCESTOR", sig(value[0], stack | {node_id}), value[1]])
            else:
                parts.append([key, value])
        memo[node_id] = hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()
        return memo[node_id]

    return {node_id: sig(node_id, frozenset()) for node_id in prompt}


class ExecutionList:
    """Port of comfy_execution.graph.ExecutionList (topological order + UX pick)."""

    def __init__(self, prompt: dict, is_cached: Callable[[str], bool]):
        self.prompt = prompt
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict] = {}
        self.staged: str | None = None

    def add_node(self, node_id: str) -> None:
        stack, links = [node_id], []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if is_link(value):
                    if not self.is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], value[1], unique_id))
        for from_id, socket, to_id in links:
            self.add_strong_link(from_id, socket, to_id)

    def add_strong_link(self, from_id: str, socket: int, to_id: str) -> None:
        if self.is_cached(from_id):
            return
        self.add_node(from_id)
        if to_id not in self.blocking[from_id]:
            self.blocking[from_id][to_id] = {}
            self.block_count[to_id] += 1
        self.blocking[from_id][to_id][socket] = True

    def is_empty(self) -> bool:
        return not self.pending

    def _is_output(self, node_id: str) -> bool:
        return NODES[self.prompt[node_id]["class_type"]].output_node

    def stage(self) -> str | None:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None  # dependency cycle (cannot pass validation)
        self.staged = self._pick(ready)
        return self.staged

    def _pick(self, ready: list[str]) -> str:
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self.blocking[node_id]:
                if any(self._is_output(b) for b in self.blocking[blocked]):
                    return node_id
        return ready[0]

    def complete(self) -> None:
        node_id, self.staged = self.staged, None
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1


# ---------------------------------------------------------------------------
# Validation (port of execution.validate_prompt / validate_inputs)
# ---------------------------------------------------------------------------

def get_input_info(types: dict, name: str) -> tuple[Any, str | None, dict | None]:
    for category in ("required", "optional", "hidden"):
        if name in types.get(category, {}):
            spec = types[category][name]
            if isinstance(spec, str):
                return spec, category, {}
            return spec[0], category, (spec[1] if len(spec) > 1 else {})
    return None, None, None


def validate_node_input(received_type: Any, input_type: Any) -> bool:
    if not received_type != input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in wanted:
        return True
    return len(received & wanted) > 0


class Validator:
    def __init__(self, emu: "Emulator", prompt: dict):
        self.emu = emu
        self.prompt = prompt
        self.validated: dict[str, tuple] = {}
        self.visiting: set[str] = set()

    def validate_prompt(self, partial_targets: list | None) -> tuple:
        prompt = self.prompt
        outputs = []
        for x in prompt:
            if "class_type" not in prompt[x]:
                return False, invalid_prompt("Cannot execute because a node is missing the class_type property.", x), [], {}
            class_type = prompt[x]["class_type"]
            node_def = NODES.get(class_type)
            if node_def is None:
                return False, invalid_prompt(f"Cannot execute because node {class_type} does not exist.", x), [], {}
            if node_def.output_node and (partial_targets is None or x in partial_targets):
                outputs.append(x)
        if not outputs:
            return False, error_body("prompt_no_outputs", "Prompt has no outputs", ""), [], {}

        good_outputs, errors, node_errors = [], [], {}
        for o in outputs:
            try:
                valid, reasons, _ = self.validate_inputs(o)
            except Exception as ex:
                valid = False
                reasons = [{"type": "exception_during_validation", "message": "Exception when validating node",
                            "details": str(ex),
                            "extra_info": {"exception_type": full_type_name(type(ex)),
                                           "traceback": traceback.format_tb(ex.__traceback__)}}]
                self.validated[o] = (False, reasons, o)
            if valid is True:
                good_outputs.append(o)
                continue
            errors.append((o, reasons))
            for node_id, result in self.validated.items():
                if result[0] is not True and len(result[1]) > 0:
                    if node_id not in node_errors:
                        node_errors[node_id] = {"errors": result[1], "dependent_outputs": [],
                                                "class_type": prompt[node_id]["class_type"]}
                    node_errors[node_id]["dependent_outputs"].append(o)
        if not good_outputs:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in errors for e in reasons)
            return False, error_body("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                     details), [], node_errors
        return True, None, good_outputs, node_errors

    def validate_inputs(self, unique_id: str) -> tuple:
        if unique_id in self.validated:
            return self.validated[unique_id]
        if unique_id in self.visiting:
            raise RecursionError("maximum recursion depth exceeded")
        self.visiting.add(unique_id)
        try:
            ret = self._validate_inputs(unique_id)
        finally:
            self.visiting.discard(unique_id)
        self.validated[unique_id] = ret
        return ret

    def _validate_inputs(self, unique_id: str) -> tuple:
        inputs = self.prompt[unique_id]["inputs"]
        node_def = NODES[self.prompt[unique_id]["class_type"]]
        types = node_def.input_types(self.emu)
        errors: list[dict] = []
        valid = True
        for x in list(types.get("required", {})) + list(types.get("optional", {})):
            input_type, category, extra_info = get_input_info(types, x)
            if x not in inputs:
                if category == "required":
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": f"{x}", "extra_info": {"input_name": x}})
                continue
            val = inputs[x]
            info = [input_type, extra_info]
            if isinstance(val, list):
                ok = self._validate_link(x, val, input_type, info, errors)
                valid = valid and ok
            else:
                self._validate_value(inputs, x, val, input_type, extra_info, info, node_def, errors)
        self._custom_validation(node_def, inputs, errors)
        if errors or valid is not True:
            return False, errors, unique_id
        return True, [], unique_id

    def _validate_link(self, x: str, val: list, input_type: Any, info: list, errors: list) -> bool:
        if len(val) != 2:
            errors.append({"type": "bad_linked_input",
                           "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                           "details": f"{x}", "extra_info": {"input_name": x, "input_config": info,
                                                              "received_value": val}})
            return True
        o_id = val[0]
        o_class_type = self.prompt[o_id]["class_type"]
        received_type = NODES[o_class_type].returns[val[1]]
        if not validate_node_input(received_type, input_type):
            errors.append({"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                           "details": f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                           "extra_info": {"input_name": x, "input_config": info, "received_type": received_type,
                                          "linked_node": val}})
            return True
        try:
            result = self.validate_inputs(o_id)
            return result[0] is not False
        except Exception as ex:
            reasons = [{"type": "exception_during_inner_validation", "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {"input_name": x, "input_config": info, "exception_message": str(ex),
                                       "exception_type": full_type_name(type(ex)),
                                       "traceback": traceback.format_tb(ex.__traceback__), "linked_node": val}}]
            self.validated[o_id] = (False, reasons, o_id)
            return False

    @staticmethod
    def _validate_value(inputs: dict, x: str, val: Any, input_type: Any, extra_info: dict, info: list,
                        node_def: NodeDef, errors: list) -> None:
        try:
            if isinstance(val, dict) and "__value__" in val:
                val = val["__value__"]
                inputs[x] = val
            converter = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(
                input_type if isinstance(input_type, str) else "")
            if converter is not None:
                val = converter(val)
                inputs[x] = val
        except Exception as ex:
            errors.append({"type": "invalid_input_type",
                           "message": f"Failed to convert an input value to a {input_type} value",
                           "details": f"{x}, {val}, {ex}",
                           "extra_info": {"input_name": x, "input_config": info, "received_value": val,
                                          "exception_message": str(ex)}})
            return
        if x in node_def.validate_inputs:
            return
        if "min" in extra_info and val < extra_info["min"]:
            errors.append({"type": "value_smaller_than_min",
                           "message": "Value {} smaller than min of {}".format(val, extra_info["min"]),
                           "details": f"{x}", "extra_info": {"input_name": x, "input_config": info,
                                                              "received_value": val}})
            return
        if "max" in extra_info and val > extra_info["max"]:
            errors.append({"type": "value_bigger_than_max",
                           "message": "Value {} bigger than max of {}".format(val, extra_info["max"]),
                           "details": f"{x}", "extra_info": {"input_name": x, "input_config": info,
                                                              "received_value": val}})
            return
        if isinstance(input_type, list) and val not in input_type:
            input_config: Any = info
            if len(input_type) > 20:
                list_info, input_config = f"(list of length {len(input_type)})", None
            else:
                list_info = str(input_type)
            errors.append({"type": "value_not_in_list", "message": "Value not in list",
                           "details": f"{x}: '{val}' not in {list_info}",
                           "extra_info": {"input_name": x, "input_config": input_config, "received_value": val}})

    def _custom_validation(self, node_def: NodeDef, inputs: dict, errors: list) -> None:
        """LoadImage.VALIDATE_INPUTS: the file must exist."""
        if node_def.name != "LoadImage":
            return
        image = inputs.get("image")
        if not isinstance(image, str):
            return
        if not os.path.exists(self.emu.annotated_path(image, "input")):
            errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                           "details": f"image - Invalid image file: {image}", "extra_info": {"input_name": "image"}})


def error_body(kind: str, message: str, details: str) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def invalid_prompt(message: str, node_id: str) -> dict:
    return error_body("invalid_prompt", message, f"Node ID '#{node_id}'")


# ---------------------------------------------------------------------------
# Execution of one prompt
# ---------------------------------------------------------------------------

class InterruptProcessingException(Exception):
    pass


class UnidentifiedImageError(OSError):
    pass


UnidentifiedImageError.__module__ = "PIL"


class ProgressRegistry:
    """comfy_execution.progress: per-node state, broadcast as progress_state."""

    def __init__(self, run: "PromptRun"):
        self.run = run
        self.nodes: dict[str, dict] = {}

    def _entry(self, node_id: str) -> dict:
        return self.nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def start(self, node_id: str) -> None:
        self._entry(node_id).update(state="running", value=0.0, max=1.0)
        self._send()

    def update(self, node_id: str, value: Any, maximum: Any, image: tuple | None) -> None:
        self._entry(node_id).update(state="running", value=value, max=maximum)
        self._send()
        run = self.run
        if image and run.emu.supports_feature(run.client_id, "supports_preview_metadata"):
            run.emu.send_binary(metadata_image_frame(image[0], image[1], run.node_meta(node_id)), run.client_id)

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._send()

    def _send(self) -> None:
        run = self.run
        nodes = {node_id: {"value": st["value"], "max": st["max"], "state": st["state"], **run.node_meta(node_id)}
                 for node_id, st in self.nodes.items() if st["state"] != "pending"}
        run.emu.send("progress_state", {"prompt_id": run.prompt_id, "nodes": nodes}, run.client_id)


class PromptRun:
    """Executes one queue item the way execution.PromptExecutor.execute_async does."""

    def __init__(self, emu: "Emulator", item: tuple):
        self.emu = emu
        self.number, self.prompt_id, self.prompt, extra_data, self.outputs = item[:5]
        self.extra_data = extra_data if isinstance(extra_data, dict) else {}
        self.client_id = self.extra_data.get("client_id") if "client_id" in self.extra_data else None
        self.messages: list = []
        self.executed: set[str] = set()
        self.progress = ProgressRegistry(self)
        self.file_hashes: dict[str, str | None] = {}
        self.sigs: dict[str, str] = {}
        self.success = True

    # -- messaging ---------------------------------------------------------
    def add_message(self, event: str, data: dict, broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.emu.send(event, data, self.client_id)

    def node_meta(self, node_id: str) -> dict:
        return {"node_id": node_id, "prompt_id": self.prompt_id, "display_node_id": node_id,
                "parent_node_id": None, "real_node_id": node_id}

    # -- cache -------------------------------------------------------------
    def is_cached(self, node_id: str) -> bool:
        return self.emu.output_cache.get(self.sigs.get(node_id)) is not None

    def _prepare_cache(self) -> None:
        is_changed = {}
        for node_id, node in self.prompt.items():
            class_type = node.get("class_type")
            if class_type == "LoadImage":
                is_changed[node_id] = [self.file_sha256(node_id)]
            elif class_type == "SaveImageWebsocket":
                is_changed[node_id] = [time.time(), uuid.uuid4().hex]
        self.sigs = compute_signatures(self.prompt, is_changed)
        self.emu.clean_unused_cache(set(self.sigs.values()))

    def file_sha256(self, node_id: str) -> str | None:
        if node_id not in self.file_hashes:
            try:
                path = self.emu.annotated_path(str(self.prompt[node_id]["inputs"].get("image")), "input")
                with open(path, "rb") as f:
                    self.file_hashes[node_id] = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                self.file_hashes[node_id] = None
        return self.file_hashes[node_id]

    # -- main loop -----------------------------------------------------------
    async def run(self) -> tuple[dict, bool, list]:
        emu = self.emu
        emu.interrupt_flag = False
        emu.client_id = self.client_id
        self.add_message("execution_start", {"prompt_id": self.prompt_id}, broadcast=False)
        self._prepare_cache()
        cached = [node_id for node_id in self.prompt if self.is_cached(node_id)]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id}, broadcast=False)
        execution = ExecutionList(self.prompt, self.is_cached)
        for node_id in self.outputs:
            execution.add_node(node_id)
        while not execution.is_empty():
            node_id = execution.stage()
            if node_id is None:
                break
            self.success = await self.execute(node_id)
            if not self.success:
                break
            execution.complete()
        else:
            self.add_message("execution_success", {"prompt_id": self.prompt_id}, broadcast=False)
        emu.last_node_id = None
        return self._history_result(), self.success, self.messages

    def _history_result(self) -> dict:
        outputs, meta = {}, {}
        for node_id in self.prompt:
            ui = self.emu.ui_cache.get(self.sigs.get(node_id))
            if ui is not None:
                outputs[node_id] = ui["output"]
                meta[node_id] = ui["meta"]
        return {"outputs": outputs, "meta": meta}

    async def execute(self, node_id: str) -> bool:
        emu = self.emu
        class_type = self.prompt[node_id]["class_type"]
        if self.is_cached(node_id):
            if self.client_id is not None:
                ui = emu.ui_cache.get(self.sigs[node_id]) or {}
                emu.send("executed", {"node": node_id, "display_node": node_id, "output": ui.get("output"),
                                      "prompt_id": self.prompt_id}, self.client_id)
            self.progress.finish(node_id)
            return True
        self.progress.start(node_id)
        if self.client_id is not None:
            emu.last_node_id = node_id
            emu.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id},
                     self.client_id)
        try:
            self.check_interrupt()
            output_ui = await self.call_node(node_id, class_type)
            if output_ui:
                ui = {"meta": {"node_id": node_id, "display_node": node_id, "parent_node": None,
                               "real_node_id": node_id}, "output": output_ui}
                emu.ui_cache[self.sigs[node_id]] = ui
                if self.client_id is not None:
                    emu.send("executed", {"node": node_id, "display_node": node_id, "output": output_ui,
                                          "prompt_id": self.prompt_id}, self.client_id)
            emu.output_cache[self.sigs[node_id]] = True
        except InterruptProcessingException:
            self._report_interrupt(node_id, class_type)
            return False
        except Exception as ex:
            self._report_error(node_id, class_type, ex, self._formatted_inputs(node_id))
            return False
        self.progress.finish(node_id)
        self.executed.add(node_id)
        return True

    def check_interrupt(self) -> None:
        if self.emu.interrupt_flag:
            self.emu.interrupt_flag = False
            raise InterruptProcessingException()

    def _report_interrupt(self, node_id: str, class_type: str) -> None:
        self.add_message("execution_interrupted", {"prompt_id": self.prompt_id, "node_id": node_id,
                                                   "node_type": class_type, "executed": list(self.executed)},
                         broadcast=True)

    def _report_error(self, node_id: str, class_type: str, ex: Exception, current_inputs: dict) -> None:
        log.info("node %s (%s) failed: %r", node_id, class_type, ex)
        self.add_message("execution_error", {
            "prompt_id": self.prompt_id, "node_id": node_id, "node_type": class_type,
            "executed": list(self.executed), "exception_message": "{}\n{}".format(ex, ""),
            "exception_type": full_type_name(type(ex)), "traceback": traceback.format_tb(ex.__traceback__),
            "current_inputs": current_inputs, "current_outputs": list(self.prompt)}, broadcast=False)

    def _formatted_inputs(self, node_id: str) -> dict:
        node = self.prompt[node_id]
        out = {}
        for name, value in node["inputs"].items():
            if is_link(value):
                source = self.prompt.get(value[0], {}).get("class_type", "?")
                returns = NODES[source].returns if source in NODES else ()
                kind = returns[value[1]] if value[1] < len(returns) else "?"
                out[name] = [f"<emulated {kind} from node {value[0]}>"]
            else:
                out[name] = [value if isinstance(value, (int, float, bool, str)) or value is None else str(value)]
        if NODES[node["class_type"]].hidden:
            out["prompt"] = [str(self.prompt)]
            out["extra_pnginfo"] = [None if self.extra_data.get("extra_pnginfo") is None
                                    else str(self.extra_data.get("extra_pnginfo"))]
        return out

    # -- progress hook (main.py hijack_progress) ---------------------------
    def hook(self, node_id: str, value: int, total: int, image: tuple | None) -> None:
        self.check_interrupt()
        self.progress.update(node_id, value, total, image)
        self.emu.send("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id},
                      self.client_id)
        if image and not self.emu.supports_feature(self.client_id, "supports_preview_metadata"):
            self.emu.send_binary(legacy_image_frame(image[0], image[1]), self.client_id)

    # -- node implementations ---------------------------------------------
    async def call_node(self, node_id: str, class_type: str) -> dict:
        delay = self.emu.config["node_delay_ms"] or 0
        await asyncio.sleep(delay / 1000.0)
        if class_type == self.emu.config["fail_node_class"]:
            raise RuntimeError(f"emulated failure in {class_type}")
        handler = {
            "LoadImage": self.node_load_image,
            "KSampler": self.node_sampler,
            "KSamplerAdvanced": self.node_sampler,
            "SaveImage": self.node_save_image,
            "PreviewImage": self.node_save_image,
            "SaveImageWebsocket": self.node_save_image_websocket,
        }.get(class_type)
        if handler is None:
            return {}
        return await handler(node_id, self.prompt[node_id]["inputs"]) or {}

    async def node_load_image(self, node_id: str, inputs: dict) -> dict:
        path = self.emu.annotated_path(inputs["image"], "input")
        with open(path, "rb") as f:
            data = f.read()
        if not looks_like_image(data):
            raise UnidentifiedImageError(f"cannot identify image file '{os.path.abspath(path)}'")
        return {}

    def sampler_steps(self, inputs: dict, class_type: str) -> int:
        steps = int(inputs.get("steps", 0))
        if class_type == "KSamplerAdvanced":
            end = min(int(inputs.get("end_at_step", 10000)), steps)
            return max(0, end - int(inputs.get("start_at_step", 0)))
        return steps if float(inputs.get("denoise", 1.0)) > 0 else 0

    async def node_sampler(self, node_id: str, inputs: dict) -> dict:
        class_type = self.prompt[node_id]["class_type"]
        steps = self.sampler_steps(inputs, class_type)
        previews = self.emu.config["preview_method"] in ("latent2rgb", "auto", "taesd")
        upstream = hashlib.sha256(compact_json(self.output_meta(node_id, 0)).encode()).hexdigest()
        for step in range(1, steps + 1):
            await asyncio.sleep((self.emu.config["sampler_step_ms"] or 0) / 1000.0)
            image = None
            if previews:
                image = ("JPEG", fake_jpeg({"node": node_id, "class_type": class_type, "step": step,
                                            "steps": steps, "upstream_sha256": upstream}))
            self.hook(node_id, step, steps, image)
        return {}

    def output_meta(self, node_id: str, batch_index: int) -> dict:
        upstream = sorted(ancestors(self.prompt, node_id), key=node_id_key)
        classes = {n: self.prompt[n].get("class_type") for n in upstream}
        loads = [n for n in upstream if classes[n] == "LoadImage"]
        return {
            "node": node_id,
            "class_type": self.prompt[node_id]["class_type"],
            "texts": [self.prompt[n]["inputs"].get("text") for n in upstream if classes[n] == "CLIPTextEncode"],
            "seeds": [self.prompt[n]["inputs"].get(SEED_INPUTS[classes[n]]) for n in upstream
                      if classes[n] in SEED_INPUTS],
            "image_sha256": self.file_sha256(loads[0]) if loads else None,
            "batch_index": batch_index,
        }

    async def node_save_image_websocket(self, node_id: str, inputs: dict) -> dict:
        count = batch_size(self.prompt, node_id)
        for step in range(count):
            self.hook(node_id, step, count, ("PNG", emulator_png(self.output_meta(node_id, step), size=self.emu.config["image_size"])))
        return {}

    async def node_save_image(self, node_id: str, inputs: dict) -> dict:
        is_preview = self.prompt[node_id]["class_type"] == "PreviewImage"
        if is_preview:
            base_dir, kind = self.emu.dirs["temp"], "temp"
            prefix = self.emu.preview_prefix(node_id)
        else:
            base_dir, kind = self.emu.dirs["output"], "output"
            prefix = str(inputs.get("filename_prefix", "ComfyUI"))
        folder, filename, counter, subfolder = save_image_path(prefix, base_dir)
        texts = self._png_metadata()
        results = []
        for index in range(batch_size(self.prompt, node_id)):
            name = f"{filename.replace('%batch_num%', str(index))}_{counter:05}_.png"
            with open(os.path.join(folder, name), "wb") as f:
                f.write(emulator_png(self.output_meta(node_id, index), texts, size=self.emu.config["image_size"]))
            results.append({"filename": name, "subfolder": subfolder, "type": kind})
            counter += 1
        return {"images": results}

    def _png_metadata(self) -> list[tuple[str, str]]:
        prompt = {}
        for node_id, node in self.prompt.items():
            prompt[node_id] = dict(node)
            if node.get("class_type") == "LoadImage":
                prompt[node_id]["is_changed"] = [self.file_sha256(node_id)]
        texts = [("prompt", json.dumps(prompt))]
        extra = self.extra_data.get("extra_pnginfo")
        if isinstance(extra, dict):
            texts += [(str(k), json.dumps(v)) for k, v in extra.items()]
        return texts


def save_image_path(filename_prefix: str, output_dir: str) -> tuple[str, str, int, str]:
    """folder_paths.get_save_image_path: folder, name, next counter, subfolder."""
    if "%" in filename_prefix:
        now = time.localtime()
        for var, val in (("%width%", IMAGE_SIZE), ("%height%", IMAGE_SIZE), ("%year%", now.tm_year),
                         ("%month%", f"{now.tm_mon:02}"), ("%day%", f"{now.tm_mday:02}"),
                         ("%hour%", f"{now.tm_hour:02}"), ("%minute%", f"{now.tm_min:02}"),
                         ("%second%", f"{now.tm_sec:02}")):
            filename_prefix = filename_prefix.replace(var, str(val))
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(folder))) != output_dir:
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed."
                        f"\n full_output_folder: {os.path.abspath(folder)}\n         output_dir: {output_dir}")
    os.makedirs(folder, exist_ok=True)
    counter = 0
    plen = len(filename)
    for existing in os.listdir(folder):
        prefix = existing[:plen + 1]
        try:
            digits = int(existing[plen + 1:].split("_")[0])
        except ValueError:
            digits = 0
        if os.path.normcase(prefix[:-1]) == os.path.normcase(filename) and prefix[-1:] == "_":
            counter = max(counter, digits)
    return folder, filename, counter + 1, subfolder


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------

@dataclass(eq=False)
class Connection:
    sid: str
    ws: web.WebSocketResponse
    transport: Any


def new_stats() -> dict:
    return {"prompts_received": 0, "prompts_accepted": 0, "prompts_executed": 0, "interrupts": [], "http_status_answers": 0,
            "queue_deletes": [], "queue_clears": 0, "history_deletes": [], "history_clears": 0,
            "history_delete_requests": 0, "uploads": 0, "binary_frames": 0, "last_prompt_at": None, "max_in_flight": 0}


class Emulator:
    def __init__(self, data_dir: str, config: dict, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.dirs = {k: os.path.abspath(os.path.join(data_dir, k)) for k in ("input", "output", "temp")}
        for path in self.dirs.values():
            os.makedirs(path, exist_ok=True)
        self.config = dict(DEFAULT_CONFIG, **config)
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sockets_metadata: dict[str, dict] = {}
        self.connections: set[Connection] = set()
        # Connections whose /ws upgrade was refused (refuse_ws): the client must close them.
        self.refused_transports: list = []
        self.binary_budget_used = 0
        self._input_files_cache: tuple[int | None, list[str]] = (None, [])
        self._wake = asyncio.Event()
        self._worker_task: asyncio.Task | None = None
        self._publisher_task: asyncio.Task | None = None
        self._reset_state()

    # -- lifecycle -----------------------------------------------------------
    def _reset_state(self) -> None:
        self.queue: list[tuple] = []
        self.running: dict[int, tuple] = {}
        self.history: dict[str, dict] = {}
        self.task_counter = 0
        self.number = 0
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.interrupt_flag = False
        self.output_cache: dict[str, bool] = {}
        self.ui_cache: dict[str, dict] = {}
        self.preview_prefixes: dict[str, str] = {}
        self.stats = new_stats()
        self.executions: list[dict] = []
        # When each prompt in the queue was accepted, for its execution record.
        self.queued_at: dict[str, float] = {}
        self.outbox: asyncio.Queue = asyncio.Queue()

    def start(self) -> None:
        self._worker_task = asyncio.create_task(self._worker())
        self._publisher_task = asyncio.create_task(self._publisher())

    async def stop(self) -> None:
        for task in (self._worker_task, self._publisher_task):
            if task:
                task.cancel()
        await asyncio.gather(*(t for t in (self._worker_task, self._publisher_task) if t), return_exceptions=True)
        self.abort_all_sockets()

    async def restart(self) -> None:
        await self.stop()
        self.sockets.clear()
        self.sockets_metadata.clear()
        self._reset_state()
        shutil.rmtree(self.dirs["temp"], ignore_errors=True)
        os.makedirs(self.dirs["temp"], exist_ok=True)
        self.start()

    def abort_all_sockets(self) -> None:
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    # -- files -----------------------------------------------------------------
    def split_annotation(self, name: str) -> tuple[str, str | None]:
        """folder_paths.annotated_filepath: 'x.png [output]' -> ('x.png', output dir)."""
        for kind, cut in (("output", 9), ("input", 8), ("temp", 7)):
            if name.endswith(f"[{kind}]"):
                return name[:-cut], self.dirs[kind]
        return name, None

    def annotated_path(self, name: str, default_type: str) -> str:
        name, base_dir = self.split_annotation(name)
        return os.path.join(base_dir or self.dirs[default_type], name)

    def input_files(self) -> list[str]:
        """Top-level image files of input/ (cached until the directory changes)."""
        folder = self.dirs["input"]
        mtime = os.stat(folder).st_mtime_ns
        if self._input_files_cache[0] != mtime:
            files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
            files = sorted(f for f in files if (mimetypes.guess_type(f)[0] or "").startswith("image/"))
            self._input_files_cache = (mtime, files)
        return list(self._input_files_cache[1])

    def preview_prefix(self, node_id: str) -> str:
        if node_id not in self.preview_prefixes:
            self.preview_prefixes[node_id] = "ComfyUI_temp_" + "".join(
                random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        return self.preview_prefixes[node_id]

    # -- cache -----------------------------------------------------------------
    def clean_unused_cache(self, used: set[str]) -> None:
        for cache in (self.output_cache, self.ui_cache):
            for key in [k for k in cache if k not in used]:
                del cache[key]

    # -- messaging ---------------------------------------------------------------
    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        self.outbox.put_nowait((False, json.dumps({"type": event, "data": data}), sid))

    def send_binary(self, frame: bytes, sid: str | None = None) -> None:
        self.outbox.put_nowait((True, frame, sid))

    def supports_feature(self, sid: str | None, feature: str) -> bool:
        if sid not in self.sockets_metadata:
            return False
        flags = self.sockets_metadata[sid].get("feature_flags", {})
        return isinstance(flags, dict) and flags.get(feature, False) is True

    def _targets(self, sid: str | None) -> list[web.WebSocketResponse]:
        if sid is None:
            return list(self.sockets.values())
        return [self.sockets[sid]] if sid in self.sockets else []

    async def _publisher(self) -> None:
        while True:
            is_binary, payload, sid = await self.outbox.get()
            for ws in self._targets(sid):
                await self._write(ws, is_binary, payload)

    async def _write(self, ws: web.WebSocketResponse, is_binary: bool, payload: Any) -> None:
        try:
            if is_binary:
                await ws.send_bytes(payload)
            else:
                await ws.send_str(payload)
        except Exception as err:  # ComfyUI logs and ignores send errors
            log.info("send error: %r", err)
            return
        if is_binary:
            self.stats["binary_frames"] += 1
            self._count_binary_for_drop()

    def _count_binary_for_drop(self) -> None:
        limit = self.config.get("drop_ws_after_binary")
        if limit is None:
            return
        self.binary_budget_used += 1
        if self.binary_budget_used >= int(limit):
            log.info("drop_ws_after_binary: aborting %d sockets", len(self.connections))
            self.config["drop_ws_after_binary"] = None
            self.binary_budget_used = 0
            self.abort_all_sockets()

    async def _send_direct(self, event: str, data: Any, sid: str) -> None:
        for ws in self._targets(sid):
            await self._write(ws, False, json.dumps({"type": event, "data": data}))

    # -- queue -------------------------------------------------------------------
    def queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": len(self.queue) + len(self.running)}}

    def queue_updated(self) -> None:
        self.send("status", {"status": self.queue_info()})

    def queue_put(self, item: tuple) -> None:
        heapq.heappush(self.queue, item)
        self.queued_at[item[1]] = time.time()
        # The most prompts it held at once, queued and running (what a gateway's capacity bounds).
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], len(self.queue) + len(self.running))
        self.queue_updated()
        self._wake.set()

    def wipe_queue(self) -> None:
        for item in self.queue:
            self.queued_at.pop(item[1], None)
        self.queue = []
        self.queue_updated()

    def delete_queue_item(self, prompt_id: Any) -> None:
        for index, item in enumerate(self.queue):
            if item[1] == prompt_id:
                self.queued_at.pop(prompt_id, None)
                if len(self.queue) == 1:
                    self.wipe_queue()
                else:
                    self.queue.pop(index)
                    heapq.heapify(self.queue)
                self.queue_updated()
                return

    def running_prompt_id(self) -> str | None:
        return next((item[1] for item in self.running.values()), None)

    async def _worker(self) -> None:
        while True:
            while not self.queue or self.config["hang"]:
                self._wake.clear()
                await self._wake.wait()
            item = heapq.heappop(self.queue)
            task_id = self.task_counter
            self.task_counter += 1
            self.running[task_id] = item
            self.queue_updated()
            run = PromptRun(self, item)
            started_at = time.time()
            try:
                history_result, success, messages = await run.run()
            except Exception:  # an emulator bug must not kill the worker
                log.exception("prompt %s crashed the emulator", run.prompt_id)
                history_result, success, messages = {"outputs": {}, "meta": {}}, False, run.messages
                self.last_node_id = None
            self._task_done(task_id, history_result, success, messages)
            self._record_execution(run.prompt_id, started_at)
            if run.client_id is not None:
                self.send("executing", {"node": None, "prompt_id": run.prompt_id}, run.client_id)
            self.stats["prompts_executed"] += 1
            await asyncio.sleep(0)

    def _record_execution(self, prompt_id: str, started_at: float) -> None:
        queued = self.queued_at.pop(prompt_id, started_at)
        self.executions.append({"prompt_id": prompt_id, "queued": queued, "start": started_at, "end": time.time()})
        if len(self.executions) > MAX_EXECUTION_RECORDS:
            del self.executions[:len(self.executions) - MAX_EXECUTION_RECORDS]

    def _task_done(self, task_id: int, history_result: dict, success: bool, messages: list) -> None:
        item = self.running.pop(task_id)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        entry = {"prompt": list(item[:5]), "outputs": {},
                 "status": {"status_str": "success" if success else "error", "completed": success,
                            "messages": messages}}
        entry.update(history_result)
        self.history[item[1]] = entry
        self.queue_updated()

    def get_history(self, max_items: int | None, offset: int) -> dict:
        out, i = {}, 0
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        for key, value in self.history.items():
            if i >= offset:
                out[key] = value
                if max_items is not None and len(out) >= max_items:
                    break
            i += 1
        return out


# ---------------------------------------------------------------------------
# HTTP handlers
# ---------------------------------------------------------------------------

def text_error(status: int) -> web.Response:
    if status == 500:
        resp = web.Response(status=500, content_type="text/plain",
                            text=f"500 {HTTPStatus(500).phrase}\n\n{HTTPStatus(500).description}")
        resp.force_close()
        return resp
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return web.Response(status=status, content_type="text/plain", text=f"{status}: {reason}")


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")


def origin_rejected(request: web.Request) -> bool:
    """server.create_origin_only_middleware's comparison."""
    if "Host" not in request.headers or "Origin" not in request.headers:
        return False
    host_domain = request.headers["Host"].lower()
    parsed = urllib.parse.urlparse(request.headers["Origin"])
    origin_domain = parsed.netloc.lower()
    host_parsed = urllib.parse.urlsplit("//" + host_domain)
    try:
        loopback = is_loopback(host_parsed.hostname)
        if parsed.port is None:
            host_domain = host_parsed.hostname
        if host_parsed.port is None:
            origin_domain = parsed.hostname
    except ValueError:
        return False
    return bool(loopback and host_domain and origin_domain and host_domain != origin_domain)


class Handlers:
    def __init__(self, emu: Emulator):
        self.emu = emu

    # -- middleware ----------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.path.startswith("/emulator/"):
            return await handler(request)
        status = self.emu.config.get("http_status")
        paths = self.emu.config.get("http_status_paths")
        if status and (paths is None or request.path in paths):
            self.emu.stats["http_status_answers"] += 1
            return text_error(int(status))
        if origin_rejected(request):
            log.warning("request with non matching host and origin, returning 403")
            return web.Response(status=403)
        if request.method == "OPTIONS":
            return web.Response()
        return await handler(request)

    # -- prompt ----------------------------------------------------------------
    async def post_prompt(self, request: web.Request) -> web.Response:
        emu = self.emu
        emu.stats["prompts_received"] += 1
        emu.stats["last_prompt_at"] = time.time()
        json_data = await request.json()
        if "number" in json_data:
            number = float(json_data["number"])
        else:
            number = emu.number
            if "front" in json_data and json_data["front"]:
                number = -number
            emu.number += 1
        if "prompt" not in json_data:
            return web.json_response({"error": error_body("no_prompt", "No prompt provided", "No prompt provided"),
                                      "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        partial = json_data["partial_execution_targets"] if "partial_execution_targets" in json_data else None
        valid = Validator(emu, prompt).validate_prompt(partial)
        extra_data = json_data["extra_data"] if "extra_data" in json_data else {}
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid[0]:
            log.info("invalid prompt: %s", valid[1])
            return web.json_response({"error": valid[1], "node_errors": valid[3]}, status=400)
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra_data}
        emu.queue_put((number, prompt_id, prompt, extra_data, valid[2], sensitive))
        emu.stats["prompts_accepted"] += 1
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": valid[3]})

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.emu.queue_info())

    # -- queue / interrupt / history -----------------------------------------
    async def get_queue(self, request: web.Request) -> web.Response:
        emu = self.emu
        if emu.config["queue_delay_ms"]:
            # A loaded server answers late; the queue it sends is the one at the answer.
            await asyncio.sleep(emu.config["queue_delay_ms"] / 1000)
        return web.json_response({"queue_running": [list(x[:5]) for x in emu.running.values()],
                                  "queue_pending": [list(x[:5]) for x in emu.queue]})

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if "clear" in json_data:
            if json_data["clear"]:
                self.emu.stats["queue_clears"] += 1
                self.emu.wipe_queue()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self.emu.stats["queue_deletes"].append(prompt_id)
                self.emu.delete_queue_item(prompt_id)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        emu = self.emu
        raw = await request.text()
        try:
            json_data = json.loads(raw)
            emu.stats["interrupts"].append(json_data)
        except json.JSONDecodeError:
            json_data = {}
            emu.stats["interrupts"].append(raw)
        prompt_id = json_data.get("prompt_id")
        if prompt_id:
            if prompt_id not in [item[1] for item in emu.running.values()]:
                log.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
                return web.Response(status=200)
            log.info("Interrupting prompt %s", prompt_id)
        emu.interrupt_flag = True
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.rel_url.query.get("max_items")
        offset = request.rel_url.query.get("offset")
        return web.json_response(self.emu.get_history(int(max_items) if max_items is not None else None,
                                                      int(offset) if offset is not None else -1))

    async def get_history_id(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        history = self.emu.history
        return web.json_response({prompt_id: history[prompt_id]} if prompt_id in history else {})

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if "clear" in json_data:
            if json_data["clear"]:
                self.emu.stats["history_clears"] += 1
                self.emu.history = {}
        if "delete" in json_data:
            self.emu.stats["history_delete_requests"] += 1
            for prompt_id in json_data["delete"]:
                self.emu.stats["history_deletes"].append(prompt_id)
                self.emu.history.pop(prompt_id, None)
        return web.Response(status=200)

    # -- files -------------------------------------------------------------------
    async def upload_image(self, request: web.Request) -> web.Response:
        drop = self.emu.config.get("drop_ws_on_upload_ms")
        if drop is not None:
            self.emu.config["drop_ws_on_upload_ms"] = None
            log.info("drop_ws_on_upload_ms: aborting %d sockets", len(self.emu.connections))
            self.emu.abort_all_sockets()
            await asyncio.sleep(drop / 1000)
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        upload_type = post.get("type")
        upload_type = "input" if upload_type is None else upload_type
        if upload_type not in self.emu.dirs:
            raise RuntimeError(f"unknown upload type {upload_type!r}")  # ComfyUI: UnboundLocalError -> 500
        upload_dir = self.emu.dirs[upload_type]
        if not (image and image.file):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        content = image.file.read()
        duplicate = False
        if not (overwrite is not None and overwrite in ("true", "1")):
            stem, ext = os.path.splitext(filename)
            i = 1
            while os.path.exists(filepath):
                with open(filepath, "rb") as f:
                    if hashlib.sha256(f.read()).digest() == hashlib.sha256(content).digest():
                        duplicate = True
                        break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            with open(filepath, "wb") as f:
                f.write(content)
        self.emu.stats["uploads"] += 1
        return web.json_response({"name": filename, "subfolder": subfolder, "type": upload_type})

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, output_dir = self.emu.split_annotation(query["filename"])
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if output_dir is None:
            output_dir = self.emu.dirs.get(query.get("type", "output"))
        if output_dir is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full_output_dir = os.path.join(output_dir, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full_output_dir), output_dir)) != output_dir:
                return web.Response(status=403)
            output_dir = full_output_dir
        filename = os.path.basename(filename)
        path = os.path.join(output_dir, filename)
        if not os.path.isfile(path):
            return web.Response(status=404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        if "preview" in query:
            return self._view_preview(path, query, disposition)
        channel = query.get("channel", "rgba")
        if channel in ("rgb", "a"):
            return self._view_channel(path, channel, disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if os.path.splitext(filename)[1].lower() in {".html", ".htm", ".js", ".css"}:
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})

    @staticmethod
    def _view_preview(path: str, query, disposition: dict) -> web.Response:
        info = query["preview"].split(";")
        image_format = info[0]
        if image_format not in ("webp", "jpeg") or "a" in query.get("channel", ""):
            image_format = "webp"
        with open(path, "rb") as f:
            seed = f.read()
        body = fake_jpeg({"preview_of": hashlib.sha256(seed).hexdigest()}) if image_format == "jpeg" \
            else fake_webp(seed)
        return web.Response(body=body, content_type=f"image/{image_format}", headers=disposition)

    @staticmethod
    def _view_channel(path: str, channel: str, disposition: dict) -> web.Response:
        with open(path, "rb") as f:
            data = f.read()
        decoded = decode_png(data)
        if decoded is not None:
            width, height, channels, pixels = decoded
            n = width * height
            if channel == "rgb":
                if channels >= 3:
                    rgb = b"".join(pixels[i * channels:i * channels + 3] for i in range(n))
                else:
                    rgb = b"".join(bytes([pixels[i * channels]]) * 3 for i in range(n))
                data = encode_png(width, height, 3, rgb)
            else:
                alpha = [pixels[i * channels + channels - 1] if channels in (2, 4) else 255 for i in range(n)]
                data = encode_png(width, height, 4, b"".join(bytes([0, 0, 0, a]) for a in alpha))
        return web.Response(body=data, content_type="image/png", headers=disposition)

    # -- info ----------------------------------------------------------------------
    async def list_model_types(self, request: web.Request) -> web.Response:
        """app/model_manager.py: the model folder names."""
        return web.json_response(MODEL_FOLDERS)

    async def get_models(self, request: web.Request) -> web.Response:
        """app/model_manager.py: a folder's files, 404 with no body for an unknown folder."""
        folder = request.match_info.get("folder", None)
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(list(self.emu.config["checkpoints"]) if folder == "checkpoints" else [])

    async def system_stats(self, request: web.Request) -> web.Response:
        ram = 25276502016
        return web.json_response({
            "system": {"os": os.name, "ram_total": ram, "ram_free": 24081764352,
                       "comfyui_version": COMFYUI_VERSION, "required_frontend_version": "1.27.10",
                       "installed_templates_version": "0.1.95", "required_templates_version": "0.1.95",
                       "python_version": sys.version, "pytorch_version": "2.11.0+cu130",
                       "embedded_python": False,
                       "argv": ["main.py", "--cpu", "--listen", self.emu.host, "--port", str(self.emu.port)]},
            "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": ram, "vram_free": 24081764352,
                         "torch_vram_total": ram, "torch_vram_free": 24081764352}]})

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response({name: d.info(self.emu) for name, d in NODES.items()})

    async def object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return web.json_response({name: NODES[name].info(self.emu)} if name in NODES else {})

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURES)

    # -- websocket -------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        emu = self.emu
        if emu.config.get("refuse_ws"):
            emu.stats["ws_refusals"] = emu.stats.get("ws_refusals", 0) + 1
            emu.refused_transports.append(request.transport)
            return text_error(503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            emu.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        conn = Connection(sid, ws, request.transport)
        emu.connections.add(conn)
        emu.sockets[sid] = ws
        emu.sockets_metadata[sid] = {"feature_flags": {}}
        try:
            await emu._send_direct("status", {"status": emu.queue_info(), "sid": sid}, sid)
            if emu.client_id == sid and emu.last_node_id is not None:
                await emu._send_direct("executing", {"node": emu.last_node_id}, sid)
            await self._read_client_messages(ws, sid)
        finally:
            emu.sockets.pop(sid, None)  # the ComfyUI bug: may orphan a newer socket
            emu.sockets_metadata.pop(sid, None)
            emu.connections.discard(conn)
        return ws

    async def _read_client_messages(self, ws: web.WebSocketResponse, sid: str) -> None:
        first_message = True
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
                if first_message and data.get("type") == "feature_flags":
                    self.emu.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                    await self.emu._send_direct("feature_flags", SERVER_FEATURES, sid)
                first_message = False
            except json.JSONDecodeError:
                log.info("Invalid JSON received from client %s", sid)
            except Exception as err:
                log.info("Error processing WebSocket message: %r", err)

    # -- emulator control -------------------------------------------------------------
    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.emu.config)

    async def post_config(self, request: web.Request) -> web.Response:
        emu = self.emu
        try:
            update = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(update, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        unknown = sorted(set(update) - set(DEFAULT_CONFIG))
        if unknown:
            return web.json_response({"error": f"unknown config keys: {unknown}"}, status=400)
        emu.config.update(update)
        if "drop_ws_after_binary" in update:
            emu.binary_budget_used = 0
        emu._wake.set()
        return web.json_response(emu.config)

    async def restart(self, request: web.Request) -> web.Response:
        await self.emu.restart()
        return web.json_response({"restarted": True})

    async def executions(self, request: web.Request) -> web.Response:
        return web.json_response({"executions": self.emu.executions})

    async def stats(self, request: web.Request) -> web.Response:
        emu = self.emu
        return web.json_response({**emu.stats,
                                  "sockets": list(emu.sockets),
                                  "open_sockets": [c.sid for c in emu.connections],
                                  "queue_pending": len(emu.queue),
                                  "running": emu.running_prompt_id(),
                                  "ws_refused_open": self._refused_still_open()})

    def _refused_still_open(self) -> int:
        emu = self.emu
        emu.refused_transports = [t for t in emu.refused_transports if t is not None and not t.is_closing()]
        return len(emu.refused_transports)


def build_app(emu: Emulator) -> web.Application:
    h = Handlers(emu)
    app = web.Application(client_max_size=MAX_UPLOAD_SIZE, middlewares=[h.middleware])
    comfy_routes = [
        ("GET", "/ws", h.websocket), ("POST", "/prompt", h.post_prompt), ("GET", "/prompt", h.get_prompt),
        ("GET", "/queue", h.get_queue), ("POST", "/queue", h.post_queue), ("POST", "/interrupt", h.post_interrupt),
        ("GET", "/history", h.get_history), ("GET", "/history/{prompt_id}", h.get_history_id),
        ("POST", "/history", h.post_history), ("GET", "/view", h.view), ("POST", "/upload/image", h.upload_image),
        ("GET", "/system_stats", h.system_stats), ("GET", "/object_info", h.object_info),
        ("GET", "/object_info/{node_class}", h.object_info_node), ("GET", "/features", h.features),
        ("GET", "/models", h.list_model_types), ("GET", "/models/{folder}", h.get_models),
    ]
    for prefix in ("/api", ""):
        for method, path, handler in comfy_routes:
            if method == "GET":
                app.router.add_get(prefix + path, handler)
            else:
                app.router.add_post(prefix + path, handler)
    app.router.add_get("/emulator/config", h.get_config)
    app.router.add_post("/emulator/config", h.post_config)
    app.router.add_post("/emulator/restart", h.restart)
    app.router.add_get("/emulator/stats", h.stats)
    app.router.add_get("/emulator/executions", h.executions)
    return app


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ComfyUI 0.3.64 emulator")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--data-dir")
    p.add_argument("--preview-method", choices=["none", "latent2rgb"], default="none")
    p.add_argument("--node-delay-ms", type=int, default=0)
    p.add_argument("--sampler-step-ms", type=int, default=0)
    p.add_argument("--fail-node-class")
    p.add_argument("--hang", action="store_true")
    p.add_argument("--refuse-ws", action="store_true")
    p.add_argument("--http-status", type=int)
    p.add_argument("--checkpoints", help="comma-separated checkpoint names (default emulator.safetensors)")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace, data_dir: str) -> None:
    config = {"preview_method": args.preview_method, "node_delay_ms": args.node_delay_ms,
              "sampler_step_ms": args.sampler_step_ms, "fail_node_class": args.fail_node_class,
              "hang": args.hang, "refuse_ws": args.refuse_ws, "http_status": args.http_status}
    if args.checkpoints:
        config["checkpoints"] = [name for name in args.checkpoints.split(",") if name]
    emu = Emulator(data_dir, config, host=args.host)
    emu.start()
    runner = web.AppRunner(build_app(emu), access_log=log if args.verbose else None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    emu.port = runner.addresses[0][1]
    sys.stdout.write(f"READY {emu.port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emu.stop()
    try:
        await asyncio.wait_for(runner.cleanup(), timeout=2)
    except (asyncio.TimeoutError, Exception):
        pass


def main(argv: list[str] | None = None) -> int:
    # A parent may have spawned us with SIGTERM/SIGINT blocked (Swift test runners do): unblock,
    # or the signal handlers below would never run.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    created = args.data_dir is None
    data_dir = tempfile.mkdtemp(prefix="comfyui-emulator-") if created else args.data_dir
    try:
        asyncio.run(serve(args, data_dir))
    finally:
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
