// Forget-It-All: after an FIA node ran, show what it produced on the node itself.
//
// The Python nodes send `{"fia_summary": [payload]}` as their UI data (nodes/summary.py).
// The payload is drawn by a canvas widget appended to the node: a few lines of text and,
// for nodes that produce a mask, one bar per layer with the fraction of weights pruned
// (for ScaPre edits: the relative change of each to_k / to_v, named by `layer_metric`).
// The widget is not serialised and is not an input, so saved workflows and queued
// prompts are unchanged. The last payload is kept on `node.fiaSummary` (read by tests).

import { app } from "../../scripts/app.js";

const FIA_NODES = new Set([
    "FIAConceptSaliencyCollector",
    "FIANeuronLocalizer",
    "FIAAgnosticFusion",
    "FIAApplyMask",
    "FIASaveMask",
    "FIALoadMask",
    "FIAMaskReport",
    "FIAScaPreErase",
    "FIAApplyScaPreEdit",
    "FIASaveScaPreEdit",
    "FIALoadScaPreEdit",
    "FIASaveScaPreLoRA",
]);

const WIDGET_NAME = "fia_summary";
const MARGIN = 10;
const LINE = 15;
const CHART = 64; // bar area height in px
const AXIS = 14; // label row under the bars
const MIN_WIDTH = 280;
const MAX_CONCEPT_BARS = 12;

const COLOURS = {
    text: "#ddd",
    dim: "#999",
    bar: "#e07a3f",
    barBg: "#2a2a2a",
    frame: "#444",
};

function percent(value) {
    if (value == null || !Number.isFinite(Number(value))) return "?";
    const v = Number(value);
    if (v === 0) return "0%";
    if (v < 0.01) return `${v.toExponential(1)}%`;
    return `${v < 1 ? v.toFixed(3) : v.toFixed(2)}%`;
}

function count(value) {
    return Number(value ?? 0).toLocaleString("en-US");
}

function bytes(value) {
    const v = Number(value ?? 0);
    if (v >= 1e6) return `${(v / 1e6).toFixed(1)} MB`;
    if (v >= 1e3) return `${(v / 1e3).toFixed(1)} kB`;
    return `${v} B`;
}

/** Text lines for a payload: [text, colour] pairs, widest first (they get cut to width). */
function summaryLines(s) {
    const lines = [];
    const concepts = Array.isArray(s.concepts) ? s.concepts : [];
    lines.push([`Concepts (${concepts.length}): ${concepts.join(", ")}`, COLOURS.text]);
    if (s.pruned_percent !== undefined) {
        lines.push([`Pruned ${percent(s.pruned_percent)}  (${count(s.pruned)} of ${count(s.total)} weights)`, COLOURS.text]);
        lines.push([`Agnostic kept ${count(s.agnostic_kept)}  ·  alpha ${s.alpha ?? "-"}`, COLOURS.text]);
    } else if (s.selected_percent !== undefined) {
        const r2 = typeof s.r2 === "number" ? ` (r2 ${s.r2})` : ""; // a mapping when r2 differs per concept
        lines.push([`Selected per concept${r2}:`, COLOURS.text]);
    } else if (s.method === "ScaPre") {
        const anchor = s.anchor ? `"${s.anchor}"` : "the empty prompt";
        const preserve = Array.isArray(s.preserve) && s.preserve.length ? `  ·  ${s.preserve.length} preserved` : "";
        lines.push([`Mapped onto ${anchor}${preserve}`, COLOURS.text]);
        const scale = s.scale !== undefined ? `  ·  scale ${s.scale}` : "";
        const rows = `${percent(s.edited_rows_percent)} of rows edited`;
        lines.push([`${s.layer_count} projections  ·  ${rows}${scale}`, COLOURS.text]);
        const share = percent(s.dense_bytes ? (100 * s.stored_bytes) / s.dense_bytes : null);
        lines.push([`Stored ${bytes(s.stored_bytes)} (${share} of a dense ${bytes(s.dense_bytes)})`, COLOURS.text]);
    } else if (s.rows !== undefined) {
        lines.push([`${count(s.rows)} prompt rows  ·  ${s.steps} saliency steps observed`, COLOURS.text]);
    }
    const facts = [s.mode, s.family].filter(Boolean).join("  ·  ");
    if (facts) lines.push([facts, COLOURS.dim]);
    if (s.saved_as) lines.push([`Saved as ${s.saved_as}`, COLOURS.text]);
    return lines;
}

function conceptBars(s) {
    if (!s.selected_percent || typeof s.selected_percent !== "object") return [];
    return Object.entries(s.selected_percent).slice(0, MAX_CONCEPT_BARS);
}

function layerBars(s) {
    return Array.isArray(s.layers) ? s.layers.filter((l) => Array.isArray(l) && l.length >= 2) : [];
}

/** Height the summary needs, in px. */
function summaryHeight(s) {
    let h = MARGIN + summaryLines(s).length * LINE;
    const concepts = conceptBars(s);
    if (concepts.length) h += concepts.length * LINE;
    if (layerBars(s).length) h += 6 + CHART + AXIS;
    return h + MARGIN / 2;
}

function fitText(ctx, text, width) {
    if (ctx.measureText(text).width <= width) return text;
    let lo = 0;
    let hi = text.length;
    while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        if (ctx.measureText(`${text.slice(0, mid)}…`).width <= width) lo = mid;
        else hi = mid - 1;
    }
    return `${text.slice(0, lo)}…`;
}

function drawSummary(ctx, s, width, top) {
    const inner = width - 2 * MARGIN;
    ctx.save();
    ctx.font = "12px sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    let y = top + MARGIN / 2 + LINE / 2;
    for (const [text, colour] of summaryLines(s)) {
        ctx.fillStyle = colour;
        ctx.fillText(fitText(ctx, text, inner), MARGIN, y);
        y += LINE;
    }

    const concepts = conceptBars(s);
    if (concepts.length) {
        const max = Math.max(...concepts.map(([, v]) => Number(v) || 0), 1e-12);
        const labelW = Math.min(110, inner * 0.4);
        for (const [name, value] of concepts) {
            ctx.fillStyle = COLOURS.dim;
            ctx.fillText(fitText(ctx, name, labelW - 4), MARGIN, y);
            const barW = inner - labelW - 60;
            ctx.fillStyle = COLOURS.barBg;
            ctx.fillRect(MARGIN + labelW, y - 4, barW, 8);
            ctx.fillStyle = COLOURS.bar;
            ctx.fillRect(MARGIN + labelW, y - 4, (barW * (Number(value) || 0)) / max, 8);
            ctx.fillStyle = COLOURS.text;
            ctx.fillText(percent(value), MARGIN + labelW + barW + 4, y);
            y += LINE;
        }
    }

    const layers = layerBars(s);
    if (layers.length) {
        const chartTop = y - LINE / 2 + 6;
        const max = Math.max(...layers.map(([, v]) => Number(v) || 0), 1e-12);
        const slot = inner / layers.length;
        const barW = Math.max(1, slot - (slot > 4 ? 2 : 0));
        ctx.fillStyle = COLOURS.barBg;
        ctx.fillRect(MARGIN, chartTop, inner, CHART);
        ctx.fillStyle = COLOURS.bar;
        layers.forEach(([, value], i) => {
            const h = (CHART * (Number(value) || 0)) / max;
            ctx.fillRect(MARGIN + i * slot, chartTop + CHART - h, barW, h);
        });
        ctx.strokeStyle = COLOURS.frame;
        ctx.strokeRect(MARGIN, chartTop, inner, CHART);
        const metric = s.layer_metric ? ` ${s.layer_metric}` : "";
        const peak = layers.reduce((best, l) => ((Number(l[1]) || 0) > (Number(best[1]) || 0) ? l : best), layers[0]);
        ctx.fillStyle = COLOURS.dim;
        ctx.font = "10px sans-serif";
        ctx.fillText(
            fitText(ctx, `${layers.length} layers · max ${percent(peak[1])}${metric} in ${peak[0]}`, inner),
            MARGIN,
            chartTop + CHART + AXIS / 2 + 1,
        );
    }
    ctx.restore();
}

function summaryWidget(node) {
    let widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
    if (widget) return widget;
    widget = node.addCustomWidget({
        name: WIDGET_NAME,
        type: WIDGET_NAME,
        value: "",
        serialize: false,
        options: { serialize: false },
        computeSize(width) {
            return [width ?? MIN_WIDTH, node.fiaSummary ? summaryHeight(node.fiaSummary) : 0];
        },
        draw(ctx, drawNode, width, y) {
            if (drawNode.fiaSummary) drawSummary(ctx, drawNode.fiaSummary, width, y);
        },
    });
    return widget;
}

function showSummary(node, payload) {
    if (!payload || typeof payload !== "object") return;
    node.fiaSummary = payload;
    summaryWidget(node);
    const min = node.computeSize();
    node.setSize([Math.max(node.size[0], min[0], MIN_WIDTH), Math.max(node.size[1], min[1])]);
    node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
    name: "FIA.Summary",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (!FIA_NODES.has(nodeData.name)) return;
        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (message) {
            onExecuted?.apply(this, arguments);
            const payload = message?.fia_summary?.[0];
            if (payload) showSummary(this, payload);
        };
    },
});
