"""Write the example workflows in ../ (ComfyUI's UI format, what the frontend saves).

    python workflows/src/build_workflows.py

The JSON files are the product; this script only keeps their layout consistent (columns
left to right, one group per step, a note in each group). Nodes are stacked in columns with
room for the summary each FIA node grows after a run, groups are drawn around their nodes,
and a layout that layout.py finds fault with is not written. ComfyUI's template browser
lists only the top-level ``workflows/*.json`` files, so this folder is not shown there; it
shows each file's name as its title and ``<name>.jpg`` next to it as its thumbnail
(thumbnails.py makes those from the browser test's screenshots).
Widget values follow the frontend's order: required inputs, then optional ones, with the
"control after generate" value right after a ``seed``.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from layout import NODE_TITLE_HEIGHT, concept_count, group_title_height, layout_problems, node_rect, summary_height

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


# File names: ComfyUI's template browser shows them as titles, in the order web/template_order.js
# sorts them (by name). The slug keeps each workflow's id and output prefix stable.
FILES = {
    "fia_imagenette_10_objects": "FIA 1 Forget ten Imagenette objects",
    "fia_five_artist_styles": "FIA 2 Forget five artist styles",
    "fia_explicit_content": "FIA 3 Forget explicit content",
    "fia_save_mask": "FIA 4 Make and save a mask",
    "fia_apply_saved_mask": "FIA 5 Apply a saved mask",
    "fia_scapre_erase": "FIA 6 ScaPre erase ten objects in seconds",
}
GAP = 40  # between a node (with its grown summary) and the next one's title bar (and its badge)
PAD = 20  # between a group's border and its nodes
COLUMN = 500  # from one column of 420 px nodes to the next
TOP = 0  # top of the first node's title bar in every group


class Graph:
    def __init__(self, slug: str, concepts: list[str]):
        self.slug = slug
        self.concepts = len(concepts)
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

    def grown(self, node: dict):
        """The node's rectangle once its summary has grown it."""
        return node_rect(node, summary_height(node["type"], self.concepts))

    def link(self, source: dict, out_name: str, target: dict, in_name: str) -> None:
        out_slot = next(i for i, o in enumerate(source["outputs"]) if o["name"] == out_name)
        in_slot = next(i for i, o in enumerate(target["inputs"]) if o["name"] == in_name)
        link_id = len(self.links) + 1
        kind = source["outputs"][out_slot]["type"]
        self.links.append([link_id, source["id"], out_slot, target["id"], in_slot, kind])
        source["outputs"][out_slot]["links"].append(link_id)
        target["inputs"][in_slot]["link"] = link_id

    def group(self, title: str, members: list[dict], colour: str, bottom: float | None = None) -> dict:
        """A group drawn around ``members`` (as tall as their summaries grow them), down to ``bottom`` if lower."""
        group = {"id": len(self.groups) + 1, "title": title, "color": colour, "font_size": 22, "flags": {}}
        rects = [self.grown(n) for n in members]
        x = min(r.x for r in rects) - PAD
        y = min(r.y for r in rects) - PAD - group_title_height(group)
        right = max(r.right for r in rects) + PAD
        low = max(max(r.bottom for r in rects) + PAD, bottom or 0)
        group["bounding"] = [x, y, right - x, low - y]
        self.groups.append(group)
        return group

    def save(self) -> Path:
        for node in self.nodes:
            for out in node["outputs"]:
                if not out["links"]:
                    out["links"] = None
        data = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"forget-it-all/workflows/{self.slug}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.5, "offset": [40, 120]}, "frontendVersion": "1.27.10"},
            "version": 0.4,
        }
        assert concept_count(data) == self.concepts, self.slug
        problems = layout_problems(data, grown=True)
        if problems:
            raise SystemExit(f"error: {self.slug}: " + "; ".join(problems))
        path = OUT / f"{FILES[self.slug]}.json"
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


class Column:
    """Nodes stacked top to bottom at one x, each below the previous one's grown summary.

    A node's height must be at least what the frontend computes for its widgets and sockets (it
    enlarges smaller ones on load, which the browser test reports); a summary adds to that.
    """

    def __init__(self, g: Graph, x: float, y: float = TOP, width: float = 420):
        self.g, self.x, self.y, self.width = g, x, y, width

    def add(self, type_: str, height: float, widgets=(), title: str | None = None, width: float | None = None):
        node = self.g.node(type_, (self.x, self.y + NODE_TITLE_HEIGHT), (width or self.width, height), widgets, title)
        self.y = self.g.grown(node).bottom + GAP
        return node

    def note(self, height: float, text: str, title: str = "How it works") -> dict:
        return self.add("MarkdownNote", height, [text], title=title)


def collector_widgets(concepts: list[str], kind: str, seed: int = 0) -> list:
    # concepts, kind, pairs, steps, saliency_steps, cfg, seed, control, mode, r1, resolution,
    # include_uncond, batch_size, then the optional concept_template, base_template, contexts
    return ["\n".join(concepts), kind, 10, 50, 10, 7.5, seed, "fixed", "fast", 0.05, 512, False, 16, "", "", ""]


CPU_NOTE_COLLECTOR = (
    "**The defaults are sized for a GPU.** The collector's work grows with concepts × **pairs** × "
    "**saliency_steps** × **resolution**²; at 10 pairs, 10 steps and 512 px it runs for a long time on a CPU.\n\n"
    "**On a CPU** start with **pairs 2**, **saliency_steps 3**, **resolution 256**, **batch_size 4** "
    "(a rougher mask; raise pairs for a better one) and **steps 12** in both samplers."
)
CPU_NOTE_SAMPLERS = (
    "**The defaults are sized for a GPU**: two samplers of 25 steps at 512 px. "
    "**On a CPU** use **steps 12** in both samplers, or a 384 px latent."
)


def model_column(g: Graph, intro: str, cpu_note: str) -> dict:
    """The introduction (on its own) and group ① with the checkpoint loader and the CPU note."""
    intro_column = Column(g, 0, width=400)
    intro_column.note(300, intro, "Start here")
    column = Column(g, 0, intro_column.y + 40, width=400)
    ckpt = column.add("CheckpointLoaderSimple", 100, [CHECKPOINT])
    note = column.note(200, cpu_note, "On a CPU")
    g.group("① Model", [ckpt, note], GROUP_COLOURS["model"])
    return ckpt


def find_column(g: Graph, ckpt: dict, concepts: list[str], kind: str, r2: float, alpha: float, note: str):
    """② collector, ③ localizer -> fusion -> report; returns (fusion, the ③ column)."""
    column = Column(g, COLUMN)
    find_note = column.note(170, note)
    collector = column.add("FIAConceptSaliencyCollector", 600, collector_widgets(concepts, kind))
    g.link(ckpt, "MODEL", collector, "model")
    g.link(ckpt, "CLIP", collector, "clip")
    g.group("② Find the weights (slow, once)", [find_note, collector], GROUP_COLOURS["find"])

    column = Column(g, 2 * COLUMN)
    choose_note = column.note(
        190,
        "**Neuron Localizer** picks, per concept and layer, the weights that score high on most "
        "saliency steps (top **r2**: objects 0.007, styles 0.02, explicit 0.01).\n\n"
        "**Agnostic Fusion** merges the concepts and *keeps* weights that at least "
        "max(2, ⌈alpha × concepts⌉) concepts share: they serve everything, not one concept.\n\n"
        "Change **r2** or **alpha** and queue again: only these nodes re-run. After a run each FIA node "
        "shows what it did.",
    )
    localizer = column.add("FIANeuronLocalizer", 140, [0.05, r2, ""])
    g.link(collector, "FIA_SALIENCY", localizer, "saliency")
    fusion = column.add("FIAAgnosticFusion", 145, [alpha, True])
    g.link(localizer, "FIA_CONCEPT_MASKS", fusion, "concept_masks")
    return fusion, column, [choose_note, localizer, fusion]


def report(g: Graph, column: Column, mask_source: dict) -> list[dict]:
    """Mask Report and its chart, stacked in ``column`` (the report's summary grows above the chart)."""
    chart = column.add("FIAMaskReport", 50)
    g.link(mask_source, "FIA_MASK", chart, "mask")
    preview = column.add("PreviewImage", 300, title="Pruned fraction per layer")
    g.link(chart, "IMAGE", preview, "images")
    return [chart, preview]


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
    step: str,
    mask_source: dict | None = None,
    after: tuple[dict, str] | None = None,
    note: str = APPLY_NOTE,
) -> None:
    """The same seed and prompt on the original and the unlearned model, side by side.

    With ``mask_source`` an Apply Mask node makes the unlearned model; otherwise ``after``
    (node, output) is it, e.g. the MODEL output of ScaPre Erase.
    """
    column = Column(g, x0)
    members = [column.note(170, note)]
    if mask_source is not None:
        apply = column.add("FIAApplyMask", 80, [1.0])
        g.link(ckpt, "MODEL", apply, "model")
        g.link(mask_source, "FIA_MASK", apply, "mask")
        after = (apply, "MODEL")
        members.append(apply)
    positive = column.add("CLIPTextEncode", 160, [prompt], title="Prompt (both images)")
    negative = column.add("CLIPTextEncode", 100, ["blurry, low quality, watermark"], title="Negative prompt")
    latent = column.add("EmptyLatentImage", 110, [512, 512, 1])
    members += [positive, negative, latent]
    for enc in (positive, negative):
        g.link(ckpt, "CLIP", enc, "clip")

    samplers_column = Column(g, x0 + 460, width=320)
    decode_column = Column(g, x0 + 820, width=220)
    samplers, decoded = [], []
    for title, model, out in (("Before: original model", ckpt, "MODEL"), ("After: unlearned model", *after)):
        decode_column.y = max(decode_column.y, samplers_column.y)  # each decode level with its sampler
        sampler = samplers_column.add("KSampler", 270, [42, "fixed", 25, 7.5, "euler", "normal", 1.0], title=title)
        g.link(model, out, sampler, "model")
        g.link(positive, "CONDITIONING", sampler, "positive")
        g.link(negative, "CONDITIONING", sampler, "negative")
        g.link(latent, "LATENT", sampler, "latent_image")
        decode = decode_column.add("VAEDecode", 50)
        g.link(sampler, "LATENT", decode, "samples")
        g.link(ckpt, "VAE", decode, "vae")
        samplers.append(sampler)
        decoded.append(decode)
    stitch = decode_column.add("ImageStitch", 150, ["right", True, 8, "white"], title="Side by side")
    g.link(decoded[0], "IMAGE", stitch, "image1")
    g.link(decoded[1], "IMAGE", stitch, "image2")
    save = Column(g, x0 + 1080, width=400).add("SaveImage", 440, [prefix], title="Before | After")
    g.link(stitch, "IMAGE", save, "images")
    g.group(
        f"{step} Before / after: same seed, same prompt",
        [*members, *samplers, *decoded, stitch, save],
        GROUP_COLOURS["compare"],
    )


INTRO = (
    "# Forget-It-All: {title}\n\n"
    "Training-free unlearning: find the feed-forward weights of the UNet that work for the "
    "concepts, keep the ones all concepts share, prune the rest.\n\n"
    "Read left to right: ① model → ② saliency (slow, once) → ③ localize + fuse (fast) → "
    "④ apply and compare.\n\n"
    "Pick your SD 1.5 checkpoint in the loader, then **Queue** (on a CPU, first read the note under it). {extra}"
)


def unlearning_workflow(slug, title, concepts, kind, r2, alpha, prompt, find_note, extra=""):
    g = Graph(slug, concepts)
    ckpt = model_column(g, INTRO.format(title=title, extra=extra), CPU_NOTE_COLLECTOR)
    fusion, column, members = find_column(g, ckpt, concepts, kind, r2, alpha, find_note)
    members += report(g, column, fusion)
    g.group("③ Choose what to prune (fast)", members, GROUP_COLOURS["choose"])
    compare_columns(g, ckpt, prompt, 3 * COLUMN, f"fia/{slug}", "④", mask_source=fusion)
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


# An SD 1.5 mask at r2 0.02 holds at most 2 % of the 49.6 M FFN weights as 4-byte indices: 3.97 MB
# measured (engine FIAMask.save with the largest selection of every layer, see the commit message).
SAVE_SIZE = "at most about 4 MB at r2 0.02 (4 bytes per pruned weight), against 3.4 GB for the model"


def save_workflow() -> Path:
    g = Graph("fia_save_mask", ["Van Gogh"])
    ckpt = model_column(
        g,
        INTRO.format(
            title="make a mask and save it",
            extra=f"The mask lands in `models/fia_masks/van_gogh.safetensors`: {SAVE_SIZE}, shareable like a "
            f"LoRA. Open **{FILES['fia_apply_saved_mask']}** to use it.",
        ).replace("④ apply and compare", "④ save"),
        CPU_NOTE_COLLECTOR.replace(" and **steps 12** in both samplers", ""),
    )
    fusion, column, members = find_column(
        g,
        ckpt,
        ["Van Gogh"],
        "style",
        0.02,
        0.8,
        "One concept (kind **style**). With a single concept the fusion prunes its whole set.",
    )
    members += report(g, column, fusion)
    g.group("③ Choose what to prune (fast)", members, GROUP_COLOURS["choose"])
    column = Column(g, 3 * COLUMN)
    note = column.note(
        150,
        "**Save Mask** writes the mask with its metadata (concepts, r2, alpha, model fingerprint): "
        f"{SAVE_SIZE}. With overwrite off an existing file is kept and a numbered name is used.",
    )
    save = column.add("FIASaveMask", 85, ["van_gogh", True])
    g.link(fusion, "FIA_MASK", save, "mask")
    g.group("④ Save", [note, save], GROUP_COLOURS["save"])
    return g.save()


def apply_saved_workflow() -> Path:
    g = Graph("fia_apply_saved_mask", ["Van Gogh"])
    ckpt = model_column(
        g,
        (
            "# Forget-It-All: apply a saved mask\n\n"
            f"No saliency run: **Load Mask** reads a mask made earlier (e.g. by **{FILES['fia_save_mask']}**) "
            "from `models/fia_masks`, and **Apply Mask** prunes it from the model.\n\n"
            "Masks made for another architecture are refused; for another checkpoint of the same "
            "architecture (a finetune) they load with a warning.\n\n"
            "Press **R** (refresh) if a new mask does not show in the list."
        ),
        CPU_NOTE_SAMPLERS,
    )
    column = Column(g, COLUMN)
    note = column.note(
        150, "Pick the file in **mask_name**. The node shows the mask's concepts and how much it prunes."
    )
    load = column.add("FIALoadMask", 60, ["van_gogh.safetensors"])
    g.group("② Load the mask", [note, load, *report(g, column, load)], GROUP_COLOURS["save"])
    compare_columns(
        g,
        ckpt,
        "a starry night over a village, in the style of Van Gogh",
        2 * COLUMN,
        "fia/apply_saved_mask",
        "③",
        load,
    )
    return g.save()


# FIAScaPreErase widgets after `concepts`: anchor, mode, scale, then the four ScaPre switches with
# their values and forms, then the optional preserve list. The engine's defaults (ScaPreSettings); the
# workflow test checks that they still are.
SCAPRE_DEFAULTS = ["", "scapre", 1.0, True, 2.0, False, 10.0, "cap", False, 0.1, "exact", True, 0.8, ""]


def scapre_workflow() -> Path:
    g = Graph("fia_scapre_erase", IMAGENETTE)
    ckpt = model_column(
        g,
        "# ScaPre: ten Imagenette objects at once\n\n"
        "A closed-form edit of the UNet's cross-attention keys and values (to_k / to_v): each concept's "
        "prompt is mapped onto the anchor's. No sampling run: the concepts are only encoded, so even "
        "fifty concepts take seconds.\n\n"
        "Read left to right: ① model → ② erase → ③ save (optional) → ④ compare.\n\n"
        "Pick your SD 1.5 checkpoint in the loader, then **Queue**. For precise pruning of a few concepts "
        "use the FIA workflows instead.",
        CPU_NOTE_SAMPLERS,
    )
    column = Column(g, COLUMN)
    note = column.note(
        190,
        "**ScaPre Erase** encodes every concept (one per line) with the CLIP, solves the edit of all 32 "
        "to_k / to_v layers at once and returns a *copy* of the model with it patched in (low-rank, a few MB).\n\n"
        "**anchor** empty: a concept draws what the prompt draws without it. **scale** sets the strength; "
        "the four switches are ScaPre's steps (mode **uce**: the closed form alone).",
    )
    erase = column.add("FIAScaPreErase", 560, ["\n".join(IMAGENETTE), *SCAPRE_DEFAULTS])
    g.link(ckpt, "MODEL", erase, "model")
    g.link(ckpt, "CLIP", erase, "clip")
    g.group("② Erase (closed form, seconds)", [note, erase], GROUP_COLOURS["find"])

    column.y += 2 * PAD + 31  # below ②'s border, past ③'s title bar
    note = column.note(
        130,
        "**Save ScaPre Edit** writes the edit to `models/fia_masks/imagenette_10_scapre.safetensors`. "
        "Elsewhere: **Load ScaPre Edit** → **Apply ScaPre Edit** on the same model, no CLIP needed.",
    )
    save = column.add("FIASaveScaPreEdit", 85, ["imagenette_10_scapre", True])
    g.link(erase, "FIA_SCAPRE_EDIT", save, "edit")
    g.group("③ Save the edit (optional)", [note, save], GROUP_COLOURS["save"])

    compare_columns(
        g,
        ckpt,
        "a photo of a golf ball on the grass",
        2 * COLUMN,
        "fia/scapre_erase",
        "④",
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
