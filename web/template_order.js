// Forget-It-All: list this pack's example workflows in the template browser in their numbered order.
//
// ComfyUI's server lists a pack's workflows in directory order (a glob), which differs from disk
// to disk, and frontend 1.27 shows them as given. The file names start with "FIA <n>", so sorting
// this pack's list by name puts "make and save a mask" before "apply a saved mask". Other packs'
// lists are passed through untouched.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

// Served as /extensions/<pack folder>/template_order.js; the templates are listed under the same folder name.
const PACK = decodeURIComponent(new URL(import.meta.url).pathname.split("/").slice(-2)[0]);

function byNumber(a, b) {
    return a.localeCompare(b, "en", { numeric: true });
}

app.registerExtension({
    name: "FIA.TemplateOrder",
    init() {
        const list = api.getWorkflowTemplates;
        if (typeof list !== "function") return;
        api.getWorkflowTemplates = async function () {
            const templates = await list.apply(this, arguments);
            if (Array.isArray(templates?.[PACK])) templates[PACK] = [...templates[PACK]].sort(byNumber);
            return templates;
        };
    },
});
