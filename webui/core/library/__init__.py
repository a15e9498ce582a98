"""The model library: a card per model file of every kind, with its preview and A1111 sidecar notes.

cards.py    the scan: Card (kind, name, size, base model, short hash, preview, sidecar), search
sidecar.py  the files beside a model: preview names, `name.json` read and written atomically
civitai.py  Civitai's by-hash answer, through the download host policy
actions.py  what the API and the UI do to a card (find, preview, save notes, fetch info)
"""
