"""ControlNet as an extension: the model, preprocessor, unit and residual parts live beside this file.

Not wired into the plugin host yet: that waits for plugin API 2 (image inputs in a UI section and in
`extension_args`, and a hook before each model call). Until then the extension loads and registers
nothing; its modules are used directly (tests, and the wiring to come):

- models.py     files in models/ControlNet, A1111 short hashes, loading (ControlNetModel, T2IAdapter)
- layout.py     what a ControlNet file is (layout, base model, config) and the LDM -> diffusers renaming
- adapter.py    the same for T2I-Adapters (TencentARC's original layout and diffusers')
- images.py     base64 images, resize modes, pixel-perfect resolution, the control tensor
- preprocess.py the weight-free preprocessors (canny, lineart, scribble, tile, shuffle, invert, inpaint)
- units.py      sd-webui-controlnet's API unit dicts -> frozen ControlUnit (errors name unit and field)
- infotext.py   `ControlNet 0: "Module: canny, Model: ..."` written and read back
- routes.py     sd-webui-controlnet's /controlnet/* routes as plain functions (mounted with plugin API 2)
- residuals.py  units made ready (preprocessed, loaded) and the BEFORE_MODEL hook that adds each active
                unit's residuals (ControlNet) or features (T2I-Adapter) to the model call
"""

from __future__ import annotations
