"""Make the template browser's thumbnails (workflows/<name>.jpg) from the browser test's screenshots.

    python workflows/src/thumbnails.py <the browser test's screenshots folder>/loaded

ComfyUI's frontend (1.27) shows ``/api/workflow_templates/<pack>/<name>.jpg`` on a pack's
template card: a JPEG named like the workflow. The screenshots are of each workflow as it
opens, cut to the whole graph (tests/e2e/test_browser.py); here they are scaled down and
compressed to a few tens of kB.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[1]
WIDTH = 640
QUALITY = 70


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        sys.stderr.write("error: give the folder of the browser test's 'loaded' screenshots\n")
        return 2
    shots = Path(argv[0])
    for workflow in sorted(WORKFLOWS.glob("*.json")):
        shot = shots / f"{workflow.stem}.png"
        if not shot.is_file():
            sys.stderr.write(f"error: no screenshot {shot}\n")
            return 2
        image = Image.open(shot).convert("RGB")
        image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
        target = workflow.with_suffix(".jpg")
        image.save(target, "JPEG", quality=QUALITY, optimize=True)
        sys.stdout.write(f"wrote {target.name}: {image.width}x{image.height}, {target.stat().st_size} bytes\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
