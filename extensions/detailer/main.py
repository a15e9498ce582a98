"""The detailer (ADetailer-compatible) as an extension: detection, masks, units, infotext, the pass.

Not wired into the plugin host yet: that waits for plugin API 2 (a hook after decode with a runner that
can queue an img2img sub-pass, and `extension_args` validation). Until then the extension loads and
registers nothing; its modules are used directly (tests, bench/detail.py, and the wiring to come):

- detectors.py  built-in OpenCV Haar detectors and YOLOv8 `.onnx` files in models/adetailer (cv2.dnn)
- yolo.py       YOLOv8 output decoding: letterbox, boxes, confidence, class, NMS
- masks.py      ADetailer's mask steps: area ratio, top-k, offset, dilate/erode, merge/invert
- units.py      ADetailer's `alwayson_scripts.ADetailer.args` -> frozen DetailerUnit (errors name field)
- infotext.py   `ADetailer model`, `ADetailer confidence`, ... (` 2nd`, ` 3rd` for later units) and back
- detail.py     the detail pass: one "only masked" inpaint per region through a run-img2img callable

Wiring, with plugin API 2 (per request, then per decoded image):

    args = units.parse_args(extension_args["ADetailer"]["args"], detectors.detector_names(folders))
    find = detectors.finder(folders)          # folders: [<data>/models/adetailer]
    src = detail.source_image(args, request, decoded, i)
    out = detail.detail_image(src, request, args, find=find, run=<the sub-pass runner>,
                              prompt=<image i's prompt>, negative_prompt=..., seed=..., subseed=...)
    params.update(infotext.infotext_params(args))    # ADetailer writes them whether or not it found
    keep `src` too when the user asks to save the image before ADetailer
"""

from __future__ import annotations
