"""Write the example workflows in ../ (ComfyUI's UI format, what the frontend saves).

    python workflows/src/build_workflows.py

The JSON files are the product; this script only keeps their layout consistent (columns
left to right, one group per step, a note in each group). ComfyUI's template browser
lists only the top-level ``workflows/*.json`` files, so this folder is not shown there.
Widget values follow the frontend's order: required inputs, then optional ones, with the
"control after generate" value right after a ``seed``.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

OUT = Path(__file__).resolve().parents[1]
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"

# Sockets (not widgets) of the nodes used, in the frontend's order.
SOCKETS_IN = {
    "CheckpointLoaderSimple": [],
    "CLIPTextEncode": [("clip", "CLIP")],
    "EmptyLatentImage": [],
    "KSampler": [
        ("model", "MODEL"),
        ("positive", "CONDITIONING"),
        ("negative", "CONDITIONING"),
        ("latent_image", "LATENT"),
    ],
    "VAEDecode": [("samples", "LATENT"), ("vae", "VAE")],
    "ImageStitch": [("image1", "IMAGE"), ("image2", "IMAGE")],
    "SaveImage": [("images", "IMAGE")],
    "PreviewImage": [("images", "IMAGE")],
    "FIAConceptSaliencyCollector": [("model", "MODEL"), ("clip", "CLIP")],
    "FIANeuronLocalizer": [("saliency", "FIA_SALIENCY")],
    "FIAAgnosticFusion": [
        ("concept_masks", "FIA_CONCEPT_MASKS"),
        ("concept_masks_2", "FIA_CONCEPT_MASKS"),
        ("concept_masks_3", "FIA_CONCEPT_MASKS"),
        ("concept_masks_4", "FIA_CONCEPT_MASKS"),
    ],
    "FIAApplyMask": [("model", "MODEL"), ("mask", "FIA_MASK")],
    "FIASaveMask": [("mask", "FIA_MASK")],
    "FIALoadMask": [],
    "FIAMaskReport": [("mask", "FIA_MASK")],
    "FIAScaPreErase": [("model", "MODEL"), ("clip", "CLIP")],
    "FIASaveScaPreEdit": [("edit", "FIA_SCAPRE_EDIT")],
    "MarkdownNote": [],
}
SOCKETS_OUT = {
    "CheckpointLoaderSimple": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "EmptyLatentImage": [("LATENT", "LATENT")],
    "KSampler": [("LATENT", "LATENT")],
    "VAEDecode": [("IMAGE", "IMAGE")],
    "ImageStitch": [("IMAGE", "IMAGE")],
    "FIAConceptSaliencyCollector": [("FIA_SALIENCY", "FIA_SALIENCY")],
    "FIANeuronLocalizer": [("FIA_CONCEPT_MASKS", "FIA_CONCEPT_MASKS")],
    "FIAAgnosticFusion": [("FIA_MASK", "FIA_MASK")],
    "FIAApplyMask": [("MODEL", "MODEL")],
    "FIALoadMask": [("FIA_MASK", "FIA_MASK")],
    "FIAMaskReport": [("IMAGE", "IMAGE")],
    "FIAScaPreErase": [("MODEL", "MODEL"), ("FIA_SCAPRE_EDIT", "FIA_SCAPRE_EDIT")],
}
GROUP_COLOURS = {"model": "#3f789e", "find": "#8A8", "choose": "#b58b2a", "compare": "#88A", "save": "#a1309b"}


class Graph:
    def __init__(self, name: str):
        self.name = name
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def node(self, type_: str, pos, size, widgets=(), title: str | None = None) -> dict:
        node = {
            "id": len(self.nodes) + 1,
            "type": type_,
            "pos": list(pos),
            "size": list(size),
            "flags": {},
            "order": len(self.nodes),
            "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in SOCKETS_IN[type_]],
            "outputs": [
                {"name": n, "type": t, "links": [], "slot_index": i}
                for i, (n, t) in enumerate(SOCKETS_OUT.get(type_, []))
            ],
            "properties": {"Node name for S&R": type_},
            "widgets_values": list(widgets),
        }
        if title:
            node["title"] = title
        if type_ == "MarkdownNote":
            node["color"], node["bgcolor"] = "#432", "#653"
        self.nodes.append(node)
        return node

    def note(self, pos, size, text: str) -> dict:
        return self.node("MarkdownNote", pos, size, [text])

    def link(self, source: dict, out_name: str, target: dict, in_name: str) -> None:
        out_slot = next(i for i, o in enumerate(source["outputs"]) if o["name"] == out_name)
        in_slot = next(i for i, o in enumerate(target["inputs"]) if o["name"] == in_name)
        link_id = len(self.links) + 1
        kind = source["outputs"][out_slot]["type"]
        self.links.append([link_id, source["id"], out_slot, target["id"], in_slot, kind])
        source["outputs"][out_slot]["links"].append(link_id)
        target["inputs"][in_slot]["link"] = link_id

    def group(self, title: str, x: float, y: float, w: float, h: float, colour: str) -> None:
        self.groups.append(
            {
                "id": len(self.groups) + 1,
                "title": title,
                "bounding": [x, y, w, h],
                "color": colour,
                "font_size": 22,
                "flags": {},
            }
        )

    def save(self) -> Path:
        for node in self.nodes:
            for out in node["outputs"]:
                if not out["links"]:
                    out["links"] = None
        data = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"forget-it-all/workflows/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [40, 60]}, "frontendVersion": "1.27.10"},
            "version": 0.4,
        }
        path = OUT / f"{self.name}.json"
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def collector_widgets(concepts: list[str], kind: str, seed: int = 0) -> list:
    # concepts, kind, pairs, steps, saliency_steps, cfg, seed, control, mode, r1, resolution,
    # include_uncond, batch_size, then the optional concept_template, base_template, contexts
    return ["\n".join(concepts), kind, 10, 50, 10, 7.5, seed, "fixed", "fast", 0.05, 512, False, 16, "", "", ""]


def model_column(g: Graph, intro: str) -> dict:
    g.note((0, 0), (380, 300), intro)
    g.group("① Model", -20, 330, 420, 210, GROUP_COLOURS["model"])
    return g.node("CheckpointLoaderSimple", (0, 380), (360, 100), [CHECKPOINT])


def find_column(g: Graph, ckpt: dict, concepts: list[str], kind: str, r2: float, alpha: float, note: str):
    """Collector -> localizer -> fusion (+ report). Returns the fusion node."""
    g.group("② Find the concepts' weights (the one slow step)", 440, -60, 460, 1520, GROUP_COLOURS["find"])
    g.note((460, -10), (420, 170), note)
    collector = g.node("FIAConceptSaliencyCollector", (460, 200), (420, 600), collector_widgets(concepts, kind))
    g.link(ckpt, "MODEL", collector, "model")
    g.link(ckpt, "CLIP", collector, "clip")

    g.group(
        "③ Choose what to prune (fast: change r2 / alpha and queue again)", 940, -60, 460, 1520, GROUP_COLOURS["choose"]
    )
    g.note(
        (960, -10),
        (420, 170),
        "**Neuron Localizer** picks, per concept and layer, the weights that score high on most "
        "saliency steps (top **r2**: objects 0.007, styles 0.02, explicit 0.01).\n\n"
        "**Agnostic Fusion** merges the concepts and *keeps* weights that at least "
        "max(2, ⌈alpha × concepts⌉) concepts share: they serve everything, not one concept.\n\n"
        "Only these nodes re-run when you change r2 or alpha. After a run each FIA node shows what it did (space is left below them).",
    )
    localizer = g.node("FIANeuronLocalizer", (960, 200), (420, 190), [0.05, r2, ""])
    g.link(collector, "FIA_SALIENCY", localizer, "saliency")
    fusion = g.node("FIAAgnosticFusion", (960, 640), (420, 150), [alpha, True])
    g.link(localizer, "FIA_CONCEPT_MASKS", fusion, "concept_masks")
    return fusion


def report(g: Graph, mask_source: dict, x: float, y: float) -> None:
    chart = g.node("FIAMaskReport", (x, y), (420, 60))
    g.link(mask_source, "FIA_MASK", chart, "mask")
    preview = g.node("PreviewImage", (x, y + 100), (420, 300), title="Pruned fraction per layer")
    g.link(chart, "IMAGE", preview, "images")


APPLY_NOTE = (
    "**Apply Mask** returns a *copy* of the model with the mask's weights pruned; the original "
    "is untouched (bypass this node and it is back).\n\n"
    "Both samplers use the same seed and prompt: the left image is the original model, the right "
    "one the unlearned model. Try prompts with and without the forgotten concepts."
)


def compare_columns(
    g: Graph,
    ckpt: dict,
    prompt: str,
    x0: float,
    prefix: str,
    mask_source: dict | None = None,
    after: tuple[dict, str] | None = None,
    note: str = APPLY_NOTE,
) -> None:
    """The same seed and prompt on the original and the unlearned model, side by side.

    With ``mask_source`` an Apply Mask node makes the unlearned model; otherwise ``after``
    (node, output) is it, e.g. the MODEL output of ScaPre Erase.
    """
    g.group("④ Before / after: same seed, same prompt", x0 - 20, -60, 1520, 1520, GROUP_COLOURS["compare"])
    g.note((x0, -10), (420, 170), note)
    if mask_source is not None:
        apply = g.node("FIAApplyMask", (x0, 200), (420, 100), [1.0])
        g.link(ckpt, "MODEL", apply, "model")
        g.link(mask_source, "FIA_MASK", apply, "mask")
        after = (apply, "MODEL")
    positive = g.node("CLIPTextEncode", (x0, 480), (420, 160), [prompt], title="Prompt (both images)")
    negative = g.node(
        "CLIPTextEncode", (x0, 680), (420, 100), ["blurry, low quality, watermark"], title="Negative prompt"
    )
    latent = g.node("EmptyLatentImage", (x0, 820), (420, 110), [512, 512, 1])
    for enc in (positive, negative):
        g.link(ckpt, "CLIP", enc, "clip")

    x1 = x0 + 460
    samplers = []
    for i, (title, model, out) in enumerate(
        (("Before: original model", ckpt, "MODEL"), ("After: unlearned model", *after))
    ):
        sampler = g.node(
            "KSampler", (x1, 200 + i * 320), (320, 270), [42, "fixed", 25, 7.5, "euler", "normal", 1.0], title=title
        )
        g.link(model, out, sampler, "model")
        g.link(positive, "CONDITIONING", sampler, "positive")
        g.link(negative, "CONDITIONING", sampler, "negative")
        g.link(latent, "LATENT", sampler, "latent_image")
        samplers.append(sampler)

    x2 = x1 + 360
    decoded = []
    for i, sampler in enumerate(samplers):
        decode = g.node("VAEDecode", (x2, 200 + i * 320), (220, 50))
        g.link(sampler, "LATENT", decode, "samples")
        g.link(ckpt, "VAE", decode, "vae")
        decoded.append(decode)
    stitch = g.node("ImageStitch", (x2, 640), (220, 150), ["right", True, 8, "white"], title="Side by side")
    g.link(decoded[0], "IMAGE", stitch, "image1")
    g.link(decoded[1], "IMAGE", stitch, "image2")
    save = g.node("SaveImage", (x2 + 260, 200), (400, 440), [prefix], title="Before | After")
    g.link(stitch, "IMAGE", save, "images")


INTRO = (
    "# Forget-It-All: {title}\n\n"
    "Training-free unlearning: find the feed-forward weights of the UNet that work for the "
    "concepts, keep the ones all concepts share, prune the rest.\n\n"
    "Read left to right: ① model → ② saliency (slow, once) → ③ localize + fuse (fast) → "
    "④ apply and compare.\n\n"
    "Pick your SD 1.5 checkpoint in the loader, then **Queue**. {extra}"
)


def unlearning_workflow(name, title, concepts, kind, r2, alpha, prompt, find_note, extra=""):
    g = Graph(name)
    ckpt = model_column(g, INTRO.format(title=title, extra=extra))
    fusion = find_column(g, ckpt, concepts, kind, r2, alpha, find_note)
    report(g, fusion, 960, 1040)
    compare_columns(g, ckpt, prompt, 1440, f"fia/{name}", mask_source=fusion)
    return g.save()


IMAGENETTE = [
    "tench",
    "English springer",
    "cassette player",
    "chain saw",
    "church",
    "French horn",
    "garbage truck",
    "gas pump",
    "golf ball",
    "parachute",
]
ARTISTS = ["Van Gogh", "Picasso", "Rembrandt", "Andy Warhol", "Caravaggio"]


def main() -> None:
    written = [
        unlearning_workflow(
            "fia_imagenette_10_objects",
            "ten Imagenette objects at once",
            IMAGENETTE,
            "object",
            0.007,
            0.6,
            "a photo of a golf ball on the grass",
            "**Concept Saliency Collector** runs a short denoising trajectory on prompt pairs with and without "
            "each concept (kind **object**: 'a {concept} in a {place}') and scores every FFN weight. "
            "All ten Imagenette classes go through one batched run.",
            "The chart under ③ shows how much of each layer is pruned.",
        ),
        unlearning_workflow(
            "fia_five_artist_styles",
            "five artist styles",
            ARTISTS,
            "style",
            0.02,
            0.8,
            "a portrait of a woman in the style of Van Gogh",
            "Kind **style** builds prompts like 'a {thing} in the style of {concept}'. Styles spread over "
            "more weights than objects: r2 0.02 and a stricter agnostic threshold (alpha 0.8).",
        ),
        unlearning_workflow(
            "fia_explicit_content",
            "explicit content",
            ["nude", "naked"],
            "explicit",
            0.01,
            0.6,
            "a photo of a person standing on a beach",
            "Kind **explicit** builds prompts like 'a photo of a {concept} {person}'. The after image uses a "
            "neutral prompt: it should stay a normal photo.",
            "The compare step uses a neutral prompt on purpose; nothing explicit is generated to check.",
        ),
        save_workflow(),
        apply_saved_workflow(),
        scapre_workflow(),
    ]
    for path in written:
        sys.stdout.write(f"wrote {path.relative_to(OUT.parent)}\n")


def save_workflow() -> Path:
    g = Graph("fia_save_mask")
    ckpt = model_column(
        g,
        INTRO.format(
            title="make a mask and save it",
            extra="The mask lands in `models/fia_masks/van_gogh.safetensors`: kilobytes, shareable like a LoRA. "
            "Open **fia_apply_saved_mask** to use it.",
        ).replace("④ apply and compare", "④ save"),
    )
    fusion = find_column(
        g,
        ckpt,
        ["Van Gogh"],
        "style",
        0.02,
        0.8,
        "One concept (kind **style**). With a single concept the fusion prunes its whole set.",
    )
    report(g, fusion, 960, 1040)
    g.group("④ Save", 1420, -60, 460, 420, GROUP_COLOURS["save"])
    g.note(
        (1440, -10),
        (420, 150),
        "**Save Mask** writes the mask with its metadata (concepts, r2, alpha, model fingerprint). With "
        "overwrite off an existing file is kept and a numbered name is used.",
    )
    save = g.node("FIASaveMask", (1440, 200), (420, 110), ["van_gogh", True])
    g.link(fusion, "FIA_MASK", save, "mask")
    return g.save()


def apply_saved_workflow() -> Path:
    g = Graph("fia_apply_saved_mask")
    ckpt = model_column(
        g,
        (
            "# Forget-It-All: apply a saved mask\n\n"
            "No saliency run: **Load Mask** reads a mask made earlier (e.g. by **fia_save_mask**) from "
            "`models/fia_masks`, and **Apply Mask** prunes it from the model.\n\n"
            "Masks made for another architecture are refused; for another checkpoint of the same "
            "architecture (a finetune) they load with a warning.\n\n"
            "Press **R** (refresh) if a new mask does not show in the list."
        ),
    )
    g.group("② Load the mask", 440, -60, 460, 980, GROUP_COLOURS["save"])
    g.note(
        (460, -10),
        (420, 150),
        "Pick the file in **mask_name**. The node shows the mask's concepts and how much it prunes.",
    )
    load = g.node("FIALoadMask", (460, 200), (420, 80), ["van_gogh.safetensors"])
    report(g, load, 460, 480)
    compare_columns(
        g, ckpt, "a starry night over a village, in the style of Van Gogh", 1440, "fia/apply_saved_mask", load
    )
    return g.save()


# FIAScaPreErase widgets after `concepts`: anchor, mode, scale, then the four ScaPre switches with
# their values and forms, then the optional preserve list. The engine's defaults (ScaPreSettings); the
# workflow test checks that they still are.
SCAPRE_DEFAULTS = ["", "scapre", 1.0, True, 2.0, False, 10.0, "cap", False, 0.1, "exact", True, 0.8, ""]


def scapre_workflow() -> Path:
    g = Graph("fia_scapre_erase")
    ckpt = model_column(
        g,
        "# ScaPre: ten Imagenette objects at once\n\n"
        "A closed-form edit of the UNet's cross-attention keys and values (to_k / to_v): each concept's "
        "prompt is mapped onto the anchor's. No sampling run: the concepts are only encoded, so even "
        "fifty concepts take seconds.\n\n"
        "Read left to right: ① model → ② erase → ③ save (optional) → ④ compare.\n\n"
        "Pick your SD 1.5 checkpoint in the loader, then **Queue**. For precise pruning of a few concepts "
        "use the FIA workflows instead.",
    )
    g.group("② Erase the concepts (closed form, seconds)", 440, -60, 460, 1000, GROUP_COLOURS["find"])
    g.note(
        (460, -10),
        (420, 170),
        "**ScaPre Erase** encodes every concept (one per line) with the CLIP, solves the edit of all 32 "
        "to_k / to_v layers at once and returns a *copy* of the model with it patched in (low-rank, a few MB).\n\n"
        "**anchor** empty: a concept draws what the prompt draws without it. **scale** sets the strength; "
        "the four switches are ScaPre's steps (mode **uce**: the closed form alone).",
    )
    erase = g.node("FIAScaPreErase", (460, 200), (420, 560), ["\n".join(IMAGENETTE), *SCAPRE_DEFAULTS])
    g.link(ckpt, "MODEL", erase, "model")
    g.link(ckpt, "CLIP", erase, "clip")

    g.group("③ Save the edit (optional)", 440, 980, 460, 400, GROUP_COLOURS["save"])
    g.note(
        (460, 1030),
        (420, 130),
        "**Save ScaPre Edit** writes the edit to `models/fia_masks/imagenette_10_scapre.safetensors`. "
        "Elsewhere: **Load ScaPre Edit** → **Apply ScaPre Edit** on the same model, no CLIP needed.",
    )
    save = g.node("FIASaveScaPreEdit", (460, 1220), (420, 110), ["imagenette_10_scapre", True])
    g.link(erase, "FIA_SCAPRE_EDIT", save, "edit")

    compare_columns(
        g,
        ckpt,
        "a photo of a golf ball on the grass",
        940,
        "fia/scapre_erase",
        after=(erase, "MODEL"),
        note="**ScaPre Erase** returned a *copy* of the model; the original is untouched (bypass the node "
        "and it is back).\n\n"
        "Both samplers use the same seed and prompt: the left image is the original model, the right one "
        "the edited model. Try prompts with and without the erased objects; change **scale** to make the "
        "edit weaker or stronger (solving it again takes seconds).",
    )
    return g.save()


if __name__ == "__main__":
    main()
