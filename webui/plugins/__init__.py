"""Extensions: discovery, manifests, loading with isolation, and the public API (webui.plugins.api).

Layering: this package sits above webui.core (which only knows the EngineHooks protocol in
webui.core.extension_points) and below the UI and the server, which read what extensions registered.
Nothing is discovered or imported at import time: build a PluginHost (host.PluginHost.for_config).
"""
