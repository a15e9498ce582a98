"""Model downloads: a URL (Hugging Face, Civitai, any allowed https host) to a verified file in the right
models folder, run as a queued job (kind "download").

    request.py   DownloadRequest (url, sha256, kind, filename), checked where it is built
    policy.py    which hosts may be fetched (allow-list, --download-hosts, no private addresses)
    http.py      one GET through the policy: pinned address, redirects checked hop by hop
    sources.py   what a source publishes: Hugging Face's sha256 header, Civitai's version API, tokens
    fetch.py     the transfer: temp file, HTTP Range resume, sha256, disk space, cancel
    files.py     the file side: staging names, server headers, the safetensors header, the move into place
    job.py       the runner the engine calls for a download job (policy and tokens from the settings)
    kinds.py     what a safetensors file is (checkpoint, LoRA, VAE, ...) and the folder it goes to
    starters.py  the built-in starter models (offered, never fetched without a click)
"""
