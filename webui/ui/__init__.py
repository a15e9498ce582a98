"""The Gradio studio: tabs that turn widgets into request objects and follow their jobs.

Never imports torch: all work goes through the services (engine, model manager, job queue, settings).
`build_studio(services)` returns the Blocks and how to mount them (see webui.api.app.create_app).
"""

from __future__ import annotations
