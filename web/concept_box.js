// Forget-It-All: check the `concepts` box of the Concept Saliency Collector as it is typed.
//
// One concept per line. Warned about, before anything is queued:
//   - no concept at all,
//   - empty lines between concepts (ignored by the node, often a slip),
//   - the same concept twice (compared case-insensitively, surrounding spaces ignored).
// The warning is shown as a title suffix, a red outline with the first warning written
// above the node, and a red border on the text box. Nothing is serialised: the title
// stays as saved. The current warnings are kept on `node.fiaConceptWarnings`.

import { app } from "../../scripts/app.js";

const NODE_ID = "FIAConceptSaliencyCollector";
const WIDGET = "concepts";
const WARN = "#e5484d";

/** Warnings for the text of the concepts box; an empty list when it is fine. */
export function conceptWarnings(text) {
    const lines = String(text ?? "").split(/\r?\n/);
    while (lines.length && lines[lines.length - 1].trim() === "") lines.pop(); // a trailing newline is fine
    const warnings = [];
    const concepts = lines.map((l) => l.trim()).filter(Boolean);
    if (!concepts.length) return ["no concept given: write one concept per line"];

    const empty = [];
    lines.forEach((line, i) => {
        if (line.trim() === "") empty.push(i + 1);
    });
    if (empty.length) warnings.push(`empty line${empty.length > 1 ? "s" : ""} ${empty.join(", ")}`);

    const seen = new Map();
    const duplicates = [];
    lines.forEach((line, i) => {
        const key = line.trim().toLowerCase().replace(/\s+/g, " ");
        if (!key) return;
        if (seen.has(key)) duplicates.push(`"${line.trim()}" (lines ${seen.get(key)} and ${i + 1})`);
        else seen.set(key, i + 1);
    });
    if (duplicates.length) warnings.push(`duplicate: ${duplicates.join(", ")}`);
    return warnings;
}

function textArea(widget) {
    return widget?.inputEl ?? widget?.element?.querySelector?.("textarea") ?? null;
}

function refresh(node) {
    const widget = node.widgets?.find((w) => w.name === WIDGET);
    if (!widget) return;
    const warnings = conceptWarnings(widget.value);
    node.fiaConceptWarnings = warnings;
    const area = textArea(widget);
    if (area) {
        area.style.outline = warnings.length ? `2px solid ${WARN}` : "";
        area.title = warnings.length ? `FIA: ${warnings.join("; ")}` : "";
    }
    node.setDirtyCanvas?.(true, true);
}

function watch(node) {
    const widget = node.widgets?.find((w) => w.name === WIDGET);
    if (!widget || widget.fiaWatched) return;
    widget.fiaWatched = true;
    const callback = widget.callback;
    widget.callback = function () {
        const result = callback?.apply(this, arguments);
        refresh(node);
        return result;
    };
    textArea(widget)?.addEventListener("input", () => refresh(node));
    refresh(node);
}

app.registerExtension({
    name: "FIA.ConceptBox",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (nodeData.name !== NODE_ID) return;

        const onNodeCreated = nodeType.prototype.onNodeCreated;
        nodeType.prototype.onNodeCreated = function () {
            const result = onNodeCreated?.apply(this, arguments);
            watch(this);
            return result;
        };

        const onConfigure = nodeType.prototype.onConfigure;
        nodeType.prototype.onConfigure = function () {
            const result = onConfigure?.apply(this, arguments);
            watch(this);
            refresh(this); // widget values are set by now
            return result;
        };

        const getTitle = nodeType.prototype.getTitle;
        nodeType.prototype.getTitle = function () {
            const title = getTitle ? getTitle.apply(this, arguments) : this.title;
            const n = this.fiaConceptWarnings?.length ?? 0;
            return n ? `${title}  ⚠ ${n} concept warning${n > 1 ? "s" : ""}` : title;
        };

        const onDrawForeground = nodeType.prototype.onDrawForeground;
        nodeType.prototype.onDrawForeground = function (ctx) {
            onDrawForeground?.apply(this, arguments);
            const warnings = this.fiaConceptWarnings;
            if (!warnings?.length || this.flags?.collapsed) return;
            const titleHeight = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
            ctx.save();
            ctx.strokeStyle = WARN;
            ctx.lineWidth = 2;
            ctx.strokeRect(-1, -titleHeight - 1, this.size[0] + 2, this.size[1] + titleHeight + 2);
            ctx.font = "12px sans-serif";
            ctx.textBaseline = "bottom";
            ctx.textAlign = "left";
            ctx.fillStyle = WARN;
            warnings
                .slice()
                .reverse()
                .forEach((text, i) => ctx.fillText(`⚠ ${text}`, 0, -titleHeight - 4 - i * 15));
            ctx.restore();
        };
    },
});
